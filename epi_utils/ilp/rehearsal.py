"""GPU rehearsal of study 03 (``epi run notebooks/03_ilp_taxonomy.ipynb --profile gpu --rehearse``).

Runs one world of the gpu profile's code path (real-facts world, knowledge probe, sequential SFT to
convergence with per-sample dynamics, signals, diagnosis, one mitigation arm pair) on the CPU with a
random-initialised model of the backend's architecture family
(:func:`epi_utils.workbench.rehearsal.tiny_model_config`) at toy scale, writes 8 samples of the
world's data in its field layout, measures the time per optimizer step and the host memory, and
estimates the full profile's GPU memory and GPU-hours with :func:`epi_utils.workbench.rehearsal.estimate`.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from epi_utils.ilp.config import IlpConfig

SEQ_LEN = 48          # tokens of one formatted real-facts sample with a BPE tokenizer (upper bound)
GEN_TOKENS = 8        # greedy tokens per exact-match check (longest target + 2)


def full_scale_tokens(cfg: IlpConfig) -> dict[str, float]:
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


def rehearse_profile(cfg: IlpConfig, *, folder: Path | None = None):
    """Run the toy-scale rehearsal of ``cfg`` (a gpu profile with ``rehearse=True``) and return the
    :class:`~epi_utils.workbench.rehearsal.Estimate`."""
    from epi_utils.ilp import study
    from epi_utils.workbench import rehearsal

    if not cfg.rehearse:
        raise ValueError("rehearse_profile needs a config with rehearse=True")
    toy = dataclasses.replace(cfg, n_seeds=1, n_train_per_task=10, n_heldout_per_task=2, max_epochs=1.0,
                              eval_every=2, mit_steps=2, mit_batch_size=4, sft_batch_size=4, threads=1,
                              device="cpu", n_entities=min(cfg.n_entities, 20))
    tmp = tempfile.TemporaryDirectory(prefix="ilp_rehearsal_") if folder is None else None
    folder = Path(folder or tmp.name)
    world = study.make_world(toy, toy.seed)
    rows = [{k: v for k, v in s.to_dict().items()} for s in world.split("train")[:8]]
    rehearsal.write_local_samples("ilp_real_facts", rows, folder)
    with rehearsal.meter() as m:
        rec = study.run_seed(toy, toy.seed, workdir=folder)
        m.steps = sum(s.steps for s in rec.stages) + 3 * toy.mit_steps
        m.tokens = m.steps * toy.sft_batch_size * SEQ_LEN
    if tmp is not None:
        tmp.cleanup()
    tokens = full_scale_tokens(cfg)
    return rehearsal.estimate(model_id=cfg.backend, micro_batch=cfg.sft_batch_size, seq_len=SEQ_LEN,
                              generation_batch=64, measured=m, **tokens)
