"""GPU rehearsal of study 03 (``epi run notebooks/03_ilp_taxonomy.ipynb --profile gpu --rehearse``).

Runs one world of the gpu profile's code path (real-facts world, knowledge probe, sequential SFT to
convergence with per-sample dynamics, signals, diagnosis, the mitigation arms) through the *same*
:func:`~epi_utils.ilp.study.run_study` on the CPU, with a random-initialised model of the backend's
architecture family (:func:`epi_utils.workbench.rehearsal.tiny_model_config`) at toy scale
(:func:`toy_config`); writes 8 samples of the world's data in its field layout, measures the time
per optimizer step and the host memory, and estimates the full profile's GPU memory and GPU-hours
with :func:`epi_utils.workbench.rehearsal.estimate` (attached to the result as ``estimate``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from epi_utils.ilp import training
from epi_utils.ilp.config import Config
from epi_utils.ilp.study import Result, run_study
from epi_utils.workbench import rehearsal
from epi_utils.workbench.progress import log_line
from epi_utils.workbench.progress import progress as default_progress

SEQ_LEN = 48          # tokens of one formatted real-facts sample with a BPE tokenizer (upper bound)
GEN_TOKENS = 8        # greedy tokens per exact-match check (longest target + 2)


def full_scale_tokens(cfg: Config) -> dict[str, float]:
    """Upper-bound token counts of the full profile: every stage trains ``max_epochs`` (convergence
    usually stops earlier), the dynamics evaluate every training sample every ``eval_every`` steps."""
    n = len(cfg.tasks) * cfg.n_train_per_task
    per_stage = n / cfg.n_stages * (1 + cfg.replay)
    steps = cfg.n_stages * per_stage * cfg.max_epochs / cfg.sft_batch_size
    evals = steps / cfg.eval_every + cfg.n_stages + 1
    train = cfg.n_seeds * (steps * cfg.sft_batch_size + 6 * cfg.mit_steps * cfg.mit_batch_size) * SEQ_LEN
    forward = cfg.n_seeds * (evals * n + 2 * n) * SEQ_LEN
    generated = cfg.n_seeds * (evals * n + 8 * n) * GEN_TOKENS
    return {"train_tokens": train, "forward_tokens": forward, "generated_tokens": generated}


def toy_config(cfg: Config) -> Config:
    """The toy-scale config a rehearsal of ``cfg`` runs: one world of at most 20 entities, 10 training
    samples per task, one epoch per stage, 2 mitigation steps, CPU, one thread."""
    if not cfg.rehearse:
        raise cfg.error("rehearse", "a rehearsal needs rehearse=True (and a real LLM backend: the gpu profile)")
    return cfg.replace(n_seeds=1, n_train_per_task=10, n_heldout_per_task=2, max_epochs=1.0, eval_every=2,
                       mit_steps=2, mit_batch_size=4, sft_batch_size=4, threads=1, workers=1, device="cpu",
                       n_entities=min(cfg.n_entities, 20))


def rehearse(cfg: Config, *, progress: Callable = default_progress, folder: Path | None = None) -> Result:
    """Run the toy-scale rehearsal of ``cfg`` (a gpu profile with ``rehearse=True``) through
    :func:`~epi_utils.ilp.study.run_study` and return its result with the full-scale
    :class:`~epi_utils.workbench.rehearsal.Estimate` as ``result.estimate``. ``folder`` keeps the
    local samples and dynamics files (default: a temporary folder)."""
    toy = toy_config(cfg)
    with tempfile.TemporaryDirectory(prefix="ilp_rehearsal_") as tmp:
        where = Path(folder if folder is not None else tmp)
        world = training.make_world(toy, toy.seed)
        rows = [dict(s.to_dict()) for s in world.split("train")[:8]]
        rehearsal.write_local_samples("ilp_real_facts", rows, where)
        with rehearsal.meter() as m:
            result = run_study(toy, progress=progress, workdir=where)
            m.steps = sum(s.steps for r in result.records for s in r.stages) + 3 * toy.mit_steps
            m.tokens = m.steps * toy.sft_batch_size * SEQ_LEN
    result.estimate = rehearsal.estimate(model_id=cfg.backend, micro_batch=cfg.sft_batch_size, seq_len=SEQ_LEN,
                                         generation_batch=64, measured=m, verbose=False, **full_scale_tokens(cfg))
    log_line(result.estimate.summary())
    return result
