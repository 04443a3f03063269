"""Study 02's GPU rehearsal: the gpu profile's code path on the CPU at toy scale, and its full cost.

:func:`rehearse` writes 8 rows per Hugging Face data set of the profile in the data set's exact
field layout (:func:`epi_utils.workbench.rehearsal.write_local_samples`), builds a tiny
random-initialised model of the profile's model family
(:func:`epi_utils.workbench.rehearsal.tiny_model_config`, ``AutoModelForCausalLM.from_config``)
with a word-level tokenizer over the samples (the real tokenizer is not available offline), runs
:func:`.study.run_study` (every bound and masking policy at one ratio, 2 steps per stage,
left-padded decoding, the same scoring) under :func:`~epi_utils.workbench.rehearsal.meter`, and
attaches :func:`~epi_utils.workbench.rehearsal.estimate` with the profile's full-scale sizes to the
result (``result.estimate``).

Full-scale sizes (the estimate's assumptions, returned with it): every run of the profile
(``n_seeds x (bounds + methods x ratios)`` plus the EWC candidates) trains ``2 x steps_per_stage``
steps of ``batch_size`` samples of ``seq_len`` tokens; EPI's replay refreshes and the importance
probes add their forward+backward tokens; every stage end decodes at most ``max_new_tokens``
tokens for each test sample (validation samples for the EWC candidates).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from epi_utils.isolation.state import epi_state_bytes_per_param
from epi_utils.isolation_study.config import Config
from epi_utils.isolation_study.hf_data import HF_TASKS
from epi_utils.isolation_study.inputs import Inputs, study_world
from epi_utils.isolation_study.study import jobs, run_study
from epi_utils.workbench import progress as progress_mod
from epi_utils.workbench import rehearsal, runs

#: 8 rows per data set in its exact column layout (``rehearsal.HF_LAYOUTS``)
ROWS = {
    "gsm8k": lambda i: {"question": f"Tom has {i} apples and buys {i + 2} more . How many apples does he have ?",
                        "answer": f"Tom has {i} + {i + 2} = {2 * i + 2} apples .\n#### {2 * i + 2}"},
    "codealpaca": lambda i: {"instruction": f"Write a function that returns {i} plus one .",
                             "input": "" if i % 2 else f"x = {i}", "output": f"def f ( x ) : return x + {i}"},
    "alpaca": lambda i: {"instruction": f"Name a colour number {i} .", "input": "",
                         "output": f"Colour {i} is blue .", "text": f"Name a colour number {i} . Colour {i} is blue ."},
}
#: assumed tokens per training sample at full scale (prompt + response, GSM8K / CodeAlpaca with a BPE tokenizer)
SEQ_LEN = 320


def toy_config(cfg: Config) -> Config:
    """The profile's config shrunk to toy scale (same methods, bounds, scoring and code path)."""
    return cfg.replace(device="cpu", n_seeds=1, hf_n_train=6, hf_n_val=1, hf_n_test=1,
                       steps_per_stage=max(2, len(cfg.tasks)), batch_size=2,
                       probe_batches=1, probe_steps=1, replay_batches=1, replay_samples=1, mask_update_interval=1,
                       warmup_steps=1, ratios=cfg.ratios[:1], ewc_lambdas=cfg.ewc_lambdas[:2],
                       max_new_tokens=min(cfg.max_new_tokens or 16, 16), eval_batch_size=4, bf16=False,
                       checkpoint_runs=False, workers=1)


def full_scale(cfg: Config) -> dict:
    """Full-scale work of the profile: runs, training tokens, generated tokens (see module docstring)."""
    per_seed = jobs(cfg)
    n_runs = cfg.n_seeds * len(per_seed) + (len(cfg.ewc_lambdas) if "ewc" in cfg.bounds else 0)
    n_tasks = len(cfg.hf_tasks)
    train = n_runs * 2 * cfg.steps_per_stage * cfg.batch_size * SEQ_LEN
    n_epi = cfg.n_seeds * sum(1 for m, _ in per_seed if m.startswith("epi"))
    refreshes = cfg.steps_per_stage // max(1, cfg.mask_update_interval)
    train += n_epi * refreshes * cfg.replay_batches * cfg.batch_size * SEQ_LEN
    cap = cfg.max_new_tokens or 512
    gen = cfg.n_seeds * len(per_seed) * 2 * n_tasks * cfg.hf_n_test * cap
    gen += (len(cfg.ewc_lambdas) if "ewc" in cfg.bounds else 0) * 2 * n_tasks * cfg.hf_n_val * cap
    return {"n_runs": n_runs, "train_tokens": float(train), "generated_tokens": float(gen), "seq_len": SEQ_LEN}


def toy_inputs(cfg: Config, folder: Path | str) -> Inputs:
    """Toy inputs of a toy config: 8 local rows per data set in its exact layout under ``folder``,
    a word-level tokenizer over them and a tiny random-initialised model of ``cfg.model``'s family."""
    import torch
    from transformers import AutoModelForCausalLM

    from epi_utils.lm.models import build_word_tokenizer

    files = {t: rehearsal.write_local_samples(HF_TASKS[t][0], [ROWS[t](i) for i in range(8)], folder)
             for t in cfg.hf_tasks}
    world = study_world(cfg, data_files=files)
    words = sorted({w for s in world.samples for w in (s.prompt + " " + s.response).split()})
    tok = build_word_tokenizer(words)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(rehearsal.tiny_model_config(cfg.model, vocab_size=len(tok)))
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    return Inputs(world=world, model=model.eval(), tokenizer=tok, pretrain={"rehearsal": True})


def toy_mixed_config(cfg: Config) -> Config:
    """The mixed design's profile shrunk to toy scale: one candidate per tuning grid, one ratio."""
    return toy_config(cfg).replace(lr_grid=cfg.lr_grid[:1], epi_lr_grid=cfg.epi_lr_grid[:1],
                                   epi_intervals=[1], epi_warmups=[1], tune_ratio=cfg.ratios[0])


def full_scale_mixed(cfg: Config) -> dict:
    """Full-scale work of a mixed-design profile, in run-equivalents of ``steps_per_stage`` steps:
    tuning (every arm x ``len(lr_grid)``; CPI-FT's per-task models once more per candidate) and per seed
    the bounds, CPI-FT (its per-task models once, a final run per ratio) and the other ratio arms."""
    from epi_utils.isolation_study.config import RATIO_ARMS

    arms, n_r, n_l = list(cfg.arms), len(cfg.ratios), len(cfg.lr_grid)
    tune_runs = len(arms) * n_l - (n_l if "epi_warmup_frozen" in arms else 0) + (n_l if "cpi_ft" in arms else 0)
    per_seed = sum(1 for a in arms if a not in RATIO_ARMS) + sum(n_r for a in arms if a in RATIO_ARMS)
    per_seed += 1 if "cpi_ft" in arms else 0
    n_runs = tune_runs + cfg.n_seeds * per_seed
    n_tasks = len(cfg.tasks)
    train = n_runs * cfg.steps_per_stage * cfg.batch_size * SEQ_LEN
    cap = cfg.max_new_tokens or 512
    gen = cfg.n_seeds * per_seed * n_tasks * cfg.hf_n_test * cap + tune_runs * n_tasks * cfg.hf_n_val * cap
    return {"n_runs": n_runs, "train_tokens": float(train), "generated_tokens": float(gen), "seq_len": SEQ_LEN}


def rehearse(cfg: Config, *, progress: Callable = progress_mod.progress, folder: Path | str | None = None):
    """Run the toy-scale study on toy inputs (written to ``folder``, default ``rehearsal_data/`` in the
    run folder) through :func:`~epi_utils.isolation_study.study.run_study` and attach the full
    profile's estimate as ``result.estimate``. Raises ``ValueError`` unless ``data_source`` is ``hf``."""
    if cfg.data_source != "hf":
        raise cfg.error("data_source", "must be 'hf': the GPU rehearsal rehearses the gpu profile's real-data path")
    mixed = cfg.design == "mixed"
    toy = toy_mixed_config(cfg) if mixed else toy_config(cfg)
    folder = Path(folder) if folder is not None else runs.current_run_dir() / "rehearsal_data"
    inputs = toy_inputs(toy, folder)
    with rehearsal.meter() as m:
        if mixed:
            from epi_utils.isolation_study.mixed import run_mixed

            result = run_mixed(toy, progress=progress, inputs=inputs)
            recs = list(result.records) + list(result.tuning_records)
        else:
            result = run_study(toy, progress=progress, inputs=inputs)
            recs = result.records
        m.steps = sum(r.steps for r in recs)
        m.tokens = sum(r.tokens for r in recs)
    size = full_scale_mixed(cfg) if mixed else full_scale(cfg)
    est = rehearsal.estimate(model_id=cfg.model, train_tokens=size["train_tokens"], micro_batch=cfg.batch_size,
                             seq_len=size["seq_len"], generated_tokens=size["generated_tokens"],
                             generation_batch=cfg.eval_batch_size, extra_state_bytes_per_param=_epi_state_bytes(cfg),
                             measured=m)
    est.assumptions["n_runs"] = size["n_runs"]
    result.estimate = est
    return result


def _epi_state_bytes(cfg: Config) -> float:
    """EPI's GPU state per parameter for this grid's task count and largest ratio (the default fp32
    layout of ``epi_state``), so the estimate follows the state layout instead of a constant."""
    n_tasks = len(cfg.hf_tasks) if cfg.data_source == "hf" else len(cfg.world_tasks)
    return epi_state_bytes_per_param(max(n_tasks, 1), ratio=max(cfg.ratios))["total"]
