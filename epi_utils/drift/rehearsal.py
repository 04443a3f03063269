"""GPU rehearsal of study 01 on the CPU (``epi run ... --profile gpu --rehearse``).

The gpu profile's code path at toy scale: a random-initialised model of the profile model's family
(:func:`epi_utils.workbench.rehearsal.tiny_model_config`; SmolLM2 -> Llama) with the world's word
tokenizer (vocabulary = the world's words, so one core suffices; the estimate uses the full model's sizes), 8 training and 8 held-out samples per task written locally in the world's ``Sample``
field layout and read back, and :func:`epi_utils.drift.study.run_study` (the same function as the
full run: checkpoint rankings, pairs, both controls, the functional test) for one model and one SFT seed in every regime and
schedule, 4 steps each (:func:`prepare` builds the toy config and inputs). Then :func:`epi_utils.workbench.rehearsal.estimate` with the full profile's
sizes. The host memory of the full run is dominated by the stored rankings:
``measurements x (4 parts x (tasks + 1) x gradient estimators + 1) x 4 bytes x max(top_shares) x
n_params`` (the data-free ``magnitude`` ranking is one per measurement)
(measurements held at once: all checkpoints for ``pairs="all"``, three for ``"anchored"``, plus
the permuted copy's), plus the per-element layer-type map (1 byte) and one model copy (4 bytes).
"""
from __future__ import annotations

import json
from typing import Callable

import torch

from epi_utils.data.world import Sample
from epi_utils.drift.config import Config
from epi_utils.drift.inputs import Inputs, make_world
from epi_utils.drift.study import Result, pairs_of, run_study
from epi_utils.lm.models import build_word_tokenizer
from epi_utils.workbench import progress, rehearsal, runs
from epi_utils.workbench.progress import log_line

N_SAMPLES = 8
REHEARSAL_STEPS = 4


def _local_samples(world, folder) -> tuple[list, list]:
    """8 train and 8 held-out samples per task, written as JSON lines in the ``Sample`` layout and
    read back (the rehearsal reads the same fields as the full run)."""
    out = []
    for split, pool in (("train", world.mixed()[0]), ("heldout", world.split("heldout"))):
        rows = []
        for task in world.config.tasks:
            rows += [s.to_dict() for s in pool if s.task == task][:N_SAMPLES]
        path = rehearsal.write_local_samples(f"world_{world.kind}", rows, folder, split=split)
        out.append([Sample(**json.loads(line)) for line in path.read_text().splitlines()])
    return out[0], out[1]


def _estimate(cfg: Config, world, meter, n_grad_est: int, result: Result) -> dict:
    """The full-scale estimate of ``cfg`` from the rehearsal's ``meter`` (module docstring)."""
    spec = rehearsal.model_spec(cfg.model)
    n = float(spec["n_params"])
    train = world.mixed()[0]
    n_tasks = len(world.config.tasks)
    words = [len((s.prompt + " " + s.response).split()) for s in train]
    seq = 2.0 * max(words) + 8  # subword tokens: ~2 per word of the world's text + format tokens (assumption)
    avg = 2.0 * float(sum(words)) / len(words) + 8
    runs = len(cfg.regimes) * len(cfg.schedules) * len(cfg.pretrain_seeds) * cfg.n_seeds
    passes = len(cfg.checkpoints) + 1  # four parts (one pass over the data) at every checkpoint, the permuted copy
    train_tokens = runs * (cfg.steps * cfg.batch_size + passes * len(train)) * avg
    forward_tokens = runs * 2 * len(world.split("heldout")) * (1 + 2 * len(cfg.checkpoints)) * avg  # dose test: base + 2 masks per checkpoint, per task and all
    held = (len(cfg.checkpoints) if cfg.pairs == "all" else 3) + 1
    per_measurement = 4 * (n_tasks + 1) * n_grad_est + ("magnitude" in cfg.estimators)  # |theta|: one, shared
    ranking_bytes = held * per_measurement * 4 * max(cfg.top_shares) * n
    host_extra = ranking_bytes + 1 * n + 4 * n  # layer-type map + permuted model copy
    device_state = 4 * (3 + 2 * n_grad_est + 2)  # theta, grad, per-task and "all" sums, normalised copy, sort
    est = rehearsal.estimate(model_id=cfg.model, train_tokens=train_tokens, micro_batch=cfg.batch_size,
                             seq_len=int(seq), forward_tokens=forward_tokens,
                             extra_state_bytes_per_param=device_state, extra_host_bytes=host_extra,
                             measured=meter)
    # ranking comparisons run on the GPU in the full run (n-sized position maps, k-sized gathers):
    # a bandwidth model, ~24 bytes per parameter (three int32 maps written and read) plus ~160 bytes
    # per ranked element and share (four gathers/bincounts/cumsums), at half the memory bandwidth
    combos = (n_tasks + 1) * len(cfg.estimators) * (len(pairs_of(cfg.checkpoints, cfg.pairs)) + 2) * runs
    per_combo = 24 * n + 160 * sum(cfg.top_shares) * n
    # plus the rankings themselves: ~40 bytes per parameter each (normalise, k-th value, select, sort)
    rankings = runs * (len(cfg.checkpoints) + 1) * per_measurement
    stats_hours = (combos * per_combo + rankings * 40 * n) / (rehearsal.GPUS[est.gpu]["bandwidth"] * 0.5) / 3600
    out = est.to_dict()
    out["statistics_gpu_hours"] = stats_hours
    out["gpu_hours_total"] = est.gpu_hours + stats_hours
    out["assumptions"]["statistics"] = ("rankings (40 bytes/parameter each) and their comparisons on the GPU "
                                        "(24 bytes/parameter + 160 bytes per ranked element and share, per task x "
                                        "estimator x compared pair x run), at half the memory bandwidth")
    out["rehearsal"]["statistics_seconds_per_run"] = sum(r.stats_seconds for r in result.runs) / len(result.runs)
    log_line(f"rankings and their comparisons: ~{stats_hours:.3f} GPU-hours more ({rankings} rankings, "
          f"{combos} comparisons); "
          f"total ~{out['gpu_hours_total']:.3f} GPU-hours")
    return out


def prepare(cfg: Config, folder) -> tuple[Config, Inputs]:
    """The toy config (one pretrained model, one SFT seed, 4 steps, checkpoints 0/2/4, CPU) and
    the toy inputs (local samples, a random-initialised model of the profile model's family with
    the world's word tokenizer) for a rehearsal of ``cfg``; samples are written under ``folder``."""
    from transformers import AutoModelForCausalLM

    world = make_world(cfg)
    tok = build_word_tokenizer(world.vocabulary())
    model_cfg = rehearsal.tiny_model_config(cfg.model, vocab_size=len(tok))  # the world's words only: fast on one core
    train, heldout = _local_samples(world, folder)
    toy = cfg.replace(rehearse=False, device="cpu", pretrain_seeds=[0], n_seeds=1, steps=REHEARSAL_STEPS,
                      batch_size=min(cfg.batch_size, 4), checkpoints=[0, 2, REHEARSAL_STEPS],
                      probe_batch=min(cfg.probe_batch, 4), spearman_sample=min(cfg.spearman_sample, 2000))

    def model_fn(_pretrain_seed: int):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(model_cfg).to("cpu").eval(), tok

    return toy, Inputs(world=world, train=train, heldout=heldout, model_fn=model_fn)


def rehearse(cfg: Config, *, progress: Callable = progress.progress) -> Result:
    """Run the toy-scale rehearsal of ``cfg`` (module docstring) through the same
    :func:`~epi_utils.drift.study.run_study`; ``result.estimate`` holds the full-scale estimate
    (``Estimate.to_dict()`` plus the statistics' GPU-hours). ``result.config`` is the toy config."""
    toy, inputs = prepare(cfg, runs.current_run_dir() / "rehearsal_data")
    with rehearsal.meter() as m:
        result = run_study(toy, progress=progress, inputs=inputs)
        m.steps += len(result.runs) * toy.steps
        m.tokens += len(result.runs) * toy.steps * toy.batch_size
    n_grad = sum(e != "magnitude" for e in cfg.estimators)
    result.estimate = _estimate(cfg, inputs.world, m, n_grad, result)
    return result
