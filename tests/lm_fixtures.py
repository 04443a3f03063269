"""Shared fixtures of the LM-testbed tests: a small world and its pretrained tiny model.

Import the fixtures into a test module with ``from tests.lm_fixtures import *`` (or
``from lm_fixtures import ...`` when tests/ is on sys.path). The pretrained model is cached under
``runs.cache_dir()`` (keyed by the world and pretraining config), so only the first test session
pays the pretraining time.
"""
from __future__ import annotations

import copy

import pytest

from epi_utils.data.world import WorldConfig, build_world

SMALL_WORLD = WorldConfig(seed=0, n_entities=16, n_train_per_task=12, n_heldout_per_task=4,
                          missing_knowledge_rate=0.1, conflict_rate=0.1, inconsistency_rate=0.2,
                          forgetting_rate=0.1, rare_complex_rate=0.1, n_stages=2)


def small_pretrain():
    """The ``TinyPretrainConfig`` of the small test models, made when asked for: this module is a plugin of
    every test process, and ``epi_utils.lm.models`` imports torch (~1.4 s of CPU in a process that needs
    none, e.g. one running test_report alone)."""
    from epi_utils.lm.models import TinyPretrainConfig

    return TinyPretrainConfig(epochs=40, batch_size=64, lr=3e-3, warmup_steps=20)


@pytest.fixture(scope="session")
def small_world():
    return build_world(SMALL_WORLD)


@pytest.fixture(scope="session")
def small_tiny(small_world):
    """(model, tokenizer) pretrained on the small world's corpus (cached). Do not train it in place:
    use the ``fresh_tiny`` fixture for a private copy."""
    import fcntl

    from epi_utils.lm.models import load_model
    from epi_utils.workbench import runs

    # Under pytest-xdist each worker builds this session fixture: the first pretrains (fresh clone, empty
    # cache), the others wait for it and load the cached model instead of pretraining the same one again.
    with open(runs.cache_dir() / ".small_tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return load_model("tiny", world=small_world, device="cpu", tiny_pretrain=small_pretrain(), progress=False)


@pytest.fixture()
def fresh_tiny(small_tiny):
    model, tok = small_tiny
    return copy.deepcopy(model), tok


@pytest.fixture
def kern():
    """The fused C kernels (:func:`epi_utils.lm.fused_kernels.lib`), or a skip that says how to get them."""
    from epi_utils.lm import fused_kernels

    lib = fused_kernels.lib()
    if lib is None:
        pytest.skip("fused kernels unavailable: install a C compiler (cc or gcc) or set CC")
    return lib
