"""What a run of study 01 reads: the world, its training and held-out samples, and the model factory.

:func:`build_inputs` builds them from a :class:`~epi_utils.drift.config.Config` (the full run);
the rehearsal builds toy ones in the same layout (:mod:`epi_utils.drift.rehearsal`) and passes
them to the same :func:`~epi_utils.drift.study.run_study`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from epi_utils.data.world import WorldConfig, build_world
from epi_utils.drift.config import Config
from epi_utils.lm.models import load_model


@dataclass
class Inputs:
    """``world``: the knowledge world; ``train``/``heldout``: its samples used for SFT and importance
    and for the functional test; ``model_fn(pretrain_seed) -> (model, tokenizer)``: a fresh model
    on the run's device."""

    world: Any
    train: list
    heldout: list
    model_fn: Callable[[int], tuple[Any, Any]]


def training_samples(world, per_task: int) -> list:
    """The world's multi-task training samples; with ``per_task > 0`` only the first ``per_task`` of
    each task in a fixed shuffle (seed 0), the same for every run."""
    train = world.mixed()[0]
    if per_task <= 0:
        return train
    order = np.random.default_rng(0).permutation(len(train))
    seen: dict[str, int] = {}
    out = []
    for i in order:
        s = train[i]
        if seen.get(s.task, 0) < per_task:
            seen[s.task] = seen.get(s.task, 0) + 1
            out.append(s)
    return out


def make_world(cfg: Config):
    """The study's world: ``WorldConfig(seed=0)`` with ``cfg.world_facts`` facts (fixed across seeds)."""
    return build_world(WorldConfig(seed=0), facts=cfg.world_facts)


def build_inputs(cfg: Config, *, world=None) -> Inputs:
    """The full run's inputs for ``cfg``: the world (built unless given), ``cfg.samples_per_task``
    training samples per task, every held-out sample, and :func:`epi_utils.lm.models.load_model`
    for ``cfg.model`` on ``cfg.torch_device`` (``tiny``: one pretrained model per pretraining seed)."""
    world = make_world(cfg) if world is None else world
    heldout = world.split("heldout")
    if not heldout:
        raise ValueError("the functional test needs held-out samples (WorldConfig.n_heldout_per_task > 0)")
    device = str(cfg.torch_device)

    def model_fn(pretrain_seed: int):
        return load_model(cfg.model, world=world, device=device, pretrain=cfg.pretrain, progress=False,
                          pretrain_seed=pretrain_seed if cfg.model == "tiny" else None)

    return Inputs(world=world, train=training_samples(world, cfg.samples_per_task), heldout=heldout,
                  model_fn=model_fn)
