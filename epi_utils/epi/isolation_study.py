"""Study 02 runner: every isolation policy on mixed and sequential SFT, with single-task references.

One *run* = fresh model (``load_model``) + one policy + ``train_sft`` on a schedule, evaluated on
``eval_split`` samples of every task at each stage end (the engine's ``stage_end_eval``; with
``eval_split="train"`` only unplanted, non-interference train samples), and, when ``eval_split`` is
``"train"``, also on the held-out samples (:class:`StageEvalHook`, row key ``acc_heldout``).

Why ``eval_split="train"`` is an option: interference and forgetting are about what a task has
*learned*. A tiny model at CPU budgets memorises most of its train samples but generalises to
held-out samples only on some tasks (format conversion, fact QA on pretrained facts); measured on
held-out samples alone, every policy then sits near 0 and the metrics cannot separate policies.

Metrics (all accuracies = greedy exact match on the evaluation samples):

- ``interference`` (mixed schedule): mean over tasks of ``acc_single[t] - acc_mixed[t]``, where
  ``acc_single`` is full SFT on task ``t`` alone for the same number of passes over its data
  (``steps / n_tasks`` steps); positive = multi-task training hurts the task.
- ``mixed_acc``: mean per-task accuracy on the ``eval_split`` samples after mixed SFT.
- ``heldout_acc``: mean per-task accuracy on the held-out samples after mixed SFT (generalisation);
  equal to ``mixed_acc`` when ``eval_split="heldout"``.
- ``seq_acc``, ``seq_bwt``, ``seq_forgetting``: ACC, BWT (Lopez-Paz & Ranzato 2017) and
  forgetting (Chaudhry et al. 2018) of the accuracy matrix ``R[i, j]`` (stage-``j`` task group
  after stage ``i``; :mod:`epi_utils.epi.continual`) of the sequential schedule, on ``eval_split``.
- ``interference``, ``mixed_acc`` and the ``seq_*`` metrics with suffix ``_prob`` use, instead of
  exact-match accuracy, the geometric-mean probability of the reference response tokens
  (``exp(-mean NLL)``, teacher-forced, on ``eval_split``, :class:`StageEvalHook`): a graded
  companion for models too small or trained too briefly for exact match to move
  (``heldout_acc_prob`` is the same as ``mixed_acc_prob`` when ``eval_split="heldout"``).

The study's world: :func:`study_world_config` builds a ``WorldConfig`` with a task subset and the
ILP planted causes switched off (except the ``forgetting`` copies, which drive forgetting in the
sequential schedule), through existing ``WorldConfig`` knobs only.

Probe/replay data for the policies: :func:`batches_for` encodes ``n`` samples per task with the
testbed's format (``encode_example``) into fixed batches; static policies measure on the first
``probe_batches`` batches, EPI's replay buffer holds ``replay_batches`` batches per task (gradients
only, never trained on).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from epi_utils.epi import continual
from epi_utils.epi.isolation import POLICIES, make_policy
from epi_utils.lm.evaluate import exact_match, response_stats, task_accuracy
from epi_utils.lm.sft_format import encode_example, pad_batch, pad_id
from epi_utils.lm.train import TrainConfig, TrainHook, train_sft

SCHEDULES = ("mixed", "sequential", "single")
LOWER_IS_BETTER = ("interference", "seq_forgetting")


def study_world_config(*, tasks: Sequence[str], n_train_per_task: int, n_heldout_per_task: int,
                       planted_rate: float = 0.0, forgetting_rate: float = 0.1, n_stages: int = 2, seed: int = 0):
    """``WorldConfig`` of study 02: ``tasks`` (schedule order; stages are contiguous chunks),
    ``planted_rate`` for the inconsistency / rare_complex / missing_knowledge / conflict rates (0 =
    clean tasks: study 02 is about interference, not about incomplete learning), ``forgetting_rate``
    for the stage-0 samples that the last stage overwrites (sequential schedule only)."""
    from epi_utils.data.world import WorldConfig

    return WorldConfig(seed=seed, tasks=tuple(tasks), n_train_per_task=n_train_per_task,
                       n_heldout_per_task=n_heldout_per_task, inconsistency_rate=planted_rate,
                       rare_complex_rate=planted_rate, missing_knowledge_rate=planted_rate,
                       conflict_rate=planted_rate, forgetting_rate=forgetting_rate, n_stages=n_stages)


@dataclass
class StudyConfig:
    """Settings shared by every run of study 02 (validated in ``__post_init__``)."""

    model: str = "tiny"                    # load_model name: tiny | smollm2 | HF id / folder
    policies: tuple[str, ...] = POLICIES
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 120                       # optimizer steps of a mixed run (sequential: per stage = steps / n_stages)
    lr: float = 3e-3
    batch_size: int = 16
    isolation_ratio: float = 0.05
    mask_update_interval: int = 10
    warmup_steps: int = 10
    ema_beta: float = 0.9
    overlap: str = "owner"
    probe_batches: int = 2                 # per task, for static_cpi / static_grad / ewc Fisher
    probe_steps: int = 10                  # CPI-FT probe fine-tune steps per task
    probe_lr: float = 3e-3
    replay_batches: int = 1                # EPI replay buffer per task (gradient measurement only)
    ewc_lambda: float = 1000.0
    eval_split: str = "heldout"
    eval_per_task: int = 0                 # 0 = every evaluation sample, else the first n per task
    device: str = "cpu"
    pretrain: bool = True

    def __post_init__(self):
        self.policies, self.seeds = tuple(self.policies), tuple(self.seeds)
        bad = [p for p in self.policies if p not in POLICIES]
        if bad:
            raise ValueError(f"StudyConfig.policies: unknown {bad}; allowed values: {POLICIES}")
        for name in ("steps", "batch_size", "mask_update_interval", "probe_batches", "probe_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"StudyConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.isolation_ratio <= 1:
            raise ValueError(f"StudyConfig.isolation_ratio must be in [0, 1], got {self.isolation_ratio}")
        if self.eval_split not in ("train", "heldout"):
            raise ValueError(f"StudyConfig.eval_split must be 'train' or 'heldout', got {self.eval_split!r}")
        if not self.seeds:
            raise ValueError("StudyConfig.seeds must not be empty")


class StageEvalHook(TrainHook):
    """At each stage end: per-task geometric-mean response-token probability on ``samples``
    (``self.prob``: list over stages of ``{task: exp(-mean NLL)}``) and, with ``heldout``, per-task
    greedy exact match on those samples (``self.heldout_acc``: list over stages of ``{task: acc}``)."""

    def __init__(self, samples: Sequence, heldout: Sequence | None = None):
        self.samples, self.prob = list(samples), []
        self.heldout, self.heldout_acc = list(heldout or []), []

    def on_step_end(self, state):
        if state.stage_step == state.stage_steps:
            was = state.model.training
            state.model.eval()
            st = response_stats(state.model, state.tokenizer, self.samples)
            by: dict[str, list[float]] = {}
            for s, r in zip(self.samples, st):
                by.setdefault(s.task, []).append(r["loss"])
            self.prob.append({t: float(np.exp(-np.mean(v))) for t, v in by.items()})
            if self.heldout:
                c = exact_match(state.model, state.tokenizer, self.heldout, batch_size=64)
                self.heldout_acc.append(task_accuracy(self.heldout, c))
            state.model.train(was)


def batches_for(tokenizer, samples: Sequence, *, batch_size: int, n_batches: int, seed: int) -> list[dict]:
    """``n_batches`` padded batches (``input_ids``, ``attention_mask``, ``labels`` with -100 on the
    prompt) of samples drawn without replacement with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(samples))[: batch_size * n_batches]
    out = []
    for k in range(0, len(idx), batch_size):
        enc = [encode_example(tokenizer, samples[i].prompt, samples[i].response) for i in idx[k:k + batch_size]]
        out.append(pad_batch(enc, pad_token_id=pad_id(tokenizer)))
    return out


def eval_samples(world, cfg: StudyConfig, *, split: str | None = None) -> list:
    """Evaluation samples of ``split`` (default ``cfg.eval_split``): train = unplanted samples
    without interference copies; at most ``cfg.eval_per_task`` per task when that is > 0."""
    split = split or cfg.eval_split
    samples = world.split(split)
    if split == "train":
        samples = [s for s in samples if s.interferes_with is None and s.planted_cause is None]
    if cfg.eval_per_task:
        keep, seen = [], {}
        for s in samples:
            if seen.get(s.task, 0) < cfg.eval_per_task:
                keep.append(s)
                seen[s.task] = seen.get(s.task, 0) + 1
        samples = keep
    return samples


def build_policy(name: str, *, world, tokenizer, cfg: StudyConfig, seed: int, schedule: str,
                 isolation_ratio: float | None = None, mask_update_interval: int | None = None):
    """A policy of ``cfg`` (overrides for the ablations) with probe/replay batches from the train split."""
    tasks = list(world.config.tasks)
    ratio = cfg.isolation_ratio if isolation_ratio is None else isolation_ratio
    kw = dict(tasks=tasks, isolation_ratio=ratio, overlap=cfg.overlap)
    train = {t: [s for s in world.split("train", task=t) if s.interferes_with is None] for t in tasks}

    def probe(n):
        return {t: batches_for(tokenizer, train[t], batch_size=cfg.batch_size, n_batches=n, seed=1000 + seed)
                for t in tasks}
    if name in ("static_cpi", "static_grad", "ewc"):
        kw["probe_data"] = probe(cfg.probe_batches)
    if name == "static_cpi":
        kw.update(probe_steps=cfg.probe_steps, probe_lr=cfg.probe_lr)
    if name == "epi":
        iv = cfg.mask_update_interval if mask_update_interval is None else mask_update_interval
        kw.update(mask_update_interval=iv, warmup_steps=cfg.warmup_steps, beta=cfg.ema_beta,
                  replay=probe(cfg.replay_batches) if schedule == "sequential" else None)
    if name == "random_mask":
        kw["seed"] = seed
    if name == "ewc":
        kw.update(ewc_lambda=cfg.ewc_lambda, schedule="sequential" if schedule == "sequential" else "mixed")
    return make_policy(name, **kw)


def run_one(policy: str, *, world, cfg: StudyConfig, seed: int, schedule: str, task: str | None = None,
            isolation_ratio: float | None = None, mask_update_interval: int | None = None,
            progress: bool = False) -> dict:
    """Train one run; returns ``{policy, schedule, seed, task, acc: [per stage {task: acc}] on
    eval_split, acc_heldout: the same on held-out samples, eval_split, prob: [per stage {task: prob}],
    mask_history, seconds, isolation_ratio, mask_update_interval}``."""
    from epi_utils.workbench import runs
    from epi_utils.lm.models import load_model

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    runs.seed_everything(seed)
    model, tok = load_model(cfg.model, world=world, device=cfg.device, pretrain=cfg.pretrain)
    ev = eval_samples(world, cfg)
    ho = eval_samples(world, cfg, split="heldout") if cfg.eval_split == "train" else []
    if schedule == "mixed":
        stages, steps = world.mixed(), cfg.steps
    elif schedule == "sequential":
        stages, steps = world.stages(), max(1, cfg.steps // world.config.n_stages)
    else:
        stages = [[s for s in world.mixed()[0] if s.task == task]]
        steps = max(1, cfg.steps // len(world.config.tasks))
        ev = [s for s in ev if s.task == task]
        ho = [s for s in ho if s.task == task]
    pol = build_policy(policy, world=world, tokenizer=tok, cfg=cfg, seed=seed, schedule=schedule,
                       isolation_ratio=isolation_ratio, mask_update_interval=mask_update_interval)
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_steps=steps, eval_every=0, eval_train=False,
                       seed=seed, warmup_ratio=0.05)
    t0 = time.perf_counter()
    probe = StageEvalHook(ev, heldout=ho)
    res = train_sft(model, tok, stages, config=tcfg, hooks=[pol, probe], eval_samples=ev, progress=progress)
    return {"policy": policy, "schedule": schedule, "seed": seed, "task": task, "acc": res.stage_end_eval,
            "acc_heldout": probe.heldout_acc if ho else res.stage_end_eval, "eval_split": cfg.eval_split,
            "prob": probe.prob, "mask_history": list(getattr(pol, "history", [])), "seconds": time.perf_counter() - t0,
            "isolation_ratio": cfg.isolation_ratio if isolation_ratio is None else isolation_ratio,
            "mask_update_interval": cfg.mask_update_interval if mask_update_interval is None else mask_update_interval}


def run_study(world, cfg: StudyConfig, *, ablation_intervals: Sequence[int] = (), ablation_ratios: Sequence[float] = (),
              ablation_seeds: Sequence[int] = (0,), ablation_schedules: Sequence[str] = ("mixed",),
              progress: bool = True) -> list[dict]:
    """Every policy x seed x (mixed, sequential), single-task references per seed, and EPI ablations
    over ``mask_update_interval`` and ``isolation_ratio`` in each of ``ablation_schedules``."""
    from tqdm.auto import tqdm

    bad = [s for s in ablation_schedules if s not in ("mixed", "sequential")]
    if bad:
        raise ValueError(f"ablation_schedules: unknown {bad}; allowed values: ('mixed', 'sequential')")
    jobs = [(p, s, sch, None, {}) for s in cfg.seeds for p in cfg.policies for sch in ("mixed", "sequential")]
    jobs += [("full_sft", s, "single", t, {}) for s in cfg.seeds for t in world.config.tasks]
    for sch in ablation_schedules:
        jobs += [("epi", s, sch, None, {"mask_update_interval": iv}) for s in ablation_seeds for iv in ablation_intervals]
        jobs += [("epi", s, sch, None, {"isolation_ratio": r}) for s in ablation_seeds for r in ablation_ratios]
    out = []
    for p, s, sch, t, kw in tqdm(jobs, desc="runs", disable=not progress):
        row = run_one(p, world=world, cfg=cfg, seed=s, schedule=sch, task=t, **kw)
        row["ablation"] = next(iter(kw), None)
        out.append(row)
    return out


def _single_refs(rows: Sequence[dict], kind: str) -> dict:
    """``{seed: {task: final accuracy (kind "acc") or probability ("prob")}}`` of the single-task runs."""
    single: dict = {}
    for r in rows:
        if r["schedule"] == "single":
            single.setdefault(r["seed"], {})[r["task"]] = r[kind][-1][r["task"]]
    return single


def _sequential_metrics(acc_per_stage: Sequence[dict], world, *, suffix: str = "") -> dict:
    """ACC, BWT and forgetting (:mod:`epi_utils.epi.continual`) of a sequential run's per-stage accuracies."""
    R = continual.accuracy_matrix(acc_per_stage, world.stage_tasks())
    return {"seq_acc" + suffix: continual.average_accuracy(R), "seq_bwt" + suffix: continual.backward_transfer(R),
            "seq_forgetting" + suffix: continual.forgetting(R)}


def _interference(ref: dict, acc: dict, tasks: Sequence[str]) -> float:
    return float(np.mean([ref[t] - acc[t] for t in tasks])) if all(t in ref for t in tasks) else float("nan")


def run_metrics(rows: Sequence[dict], world) -> "object":
    """Per (policy, seed) metrics from :func:`run_study` rows (``pandas.DataFrame``): interference,
    mixed_acc, heldout_acc, seq_acc, seq_bwt, seq_forgetting, the same (but heldout_acc) with suffix
    ``_prob``, per-task mixed accuracies ``acc/<task>`` (eval_split) and ``heldout/<task>``.
    Rows without ``eval_split`` / ``acc_heldout`` count as ``eval_split="heldout"``."""
    import pandas as pd

    tasks = list(world.config.tasks)
    table = {}
    for kind, suffix in (("acc", ""), ("prob", "_prob")):
        single = _single_refs(rows, kind)
        for r in rows:
            if r["schedule"] == "single" or r["ablation"] is not None:
                continue
            d = table.setdefault((r["policy"], r["seed"]), {"policy": r["policy"], "seed": r["seed"]})
            if r["schedule"] == "mixed":
                acc = r[kind][-1]
                d["mixed_acc" + suffix] = float(np.mean([acc[t] for t in tasks]))
                if r.get("eval_split", "heldout") == "heldout":
                    d["heldout_acc" + suffix] = d["mixed_acc" + suffix]
                elif kind == "acc":
                    ho = r["acc_heldout"][-1]
                    d["heldout_acc"] = float(np.mean([ho[t] for t in tasks]))
                    d.update({f"heldout/{t}": ho[t] for t in tasks})
                ref = single.get(r["seed"], {})
                if all(t in ref for t in tasks):
                    d["interference" + suffix] = _interference(ref, acc, tasks)
                if kind == "acc":
                    d.update({f"acc/{t}": acc[t] for t in tasks})
            else:
                d.update(_sequential_metrics(r[kind], world, suffix=suffix))
    return pd.DataFrame(list(table.values()))


def ablation_table(rows: Sequence[dict], world):
    """EPI ablation rows (``DataFrame``: ablation, value, schedule, seed, then for mixed runs
    interference (NaN without single-task references for that seed), mixed_acc, heldout_acc,
    mixed_acc_prob; for sequential runs seq_acc, seq_bwt, seq_forgetting; NaN elsewhere)."""
    import pandas as pd

    tasks = list(world.config.tasks)
    single = _single_refs(rows, "acc")
    out = []
    for r in rows:
        if r["ablation"] is None:
            continue
        d = {"ablation": r["ablation"], "value": r[r["ablation"]], "schedule": r["schedule"], "seed": r["seed"]}
        if r["schedule"] == "sequential":
            d.update(_sequential_metrics(r["acc"], world))
        else:
            acc, ho = r["acc"][-1], r.get("acc_heldout", r["acc"])[-1]
            d.update(interference=_interference(single.get(r["seed"], {}), acc, tasks),
                     mixed_acc=float(np.mean([acc[t] for t in tasks])),
                     heldout_acc=float(np.mean([ho[t] for t in tasks])),
                     mixed_acc_prob=float(np.mean([r["prob"][-1][t] for t in tasks])))
        out.append(d)
    return pd.DataFrame(out)


def epi_verdict(head: dict, *, baselines: Sequence[str] = ("full_sft", "static_cpi", "static_grad", "random_mask",
                                                           "ewc"), suffix: str = "") -> list[str]:
    """Sentences comparing EPI with each baseline per metric: 'beats' only when the CIs do not
    overlap in EPI's favour; 'is beaten by' in the other direction; else 'is not distinguishable'."""
    better_low = set(LOWER_IS_BETTER)
    out = []
    if "epi" not in head:
        return ["EPI was not run."]
    for metric in ("interference", "mixed_acc", "heldout_acc", "seq_acc", "seq_bwt", "seq_forgetting"):
        k = metric + suffix
        if k not in head["epi"]:
            continue
        e_lo, e_hi = head["epi"][k + "_ci95"]
        for b in baselines:
            if b not in head or k not in head[b]:
                continue
            lo, hi = head[b][k + "_ci95"]
            if metric in better_low:
                win, lose = e_hi < lo, e_lo > hi
            else:
                win, lose = e_lo > hi, e_hi < lo
            word = "beats" if win else ("is beaten by" if lose else "is not distinguishable from")
            out.append(f"{k}: EPI {head['epi'][k]:.3f} {word} {b} {head[b][k]:.3f}")
    return out


def conclusions(head: dict, verdict: Sequence[str], *, suffix: str = "", learned_floor: float = 0.5) -> list[str]:
    """Sentences for the notebook's conclusions, computed from ``head`` (:func:`headline`) and
    ``verdict`` (:func:`epi_verdict`): whether full SFT learned the tasks (``mixed_acc`` of
    ``full_sft`` >= ``learned_floor``), per metric the leading policy and whether its lead is
    decided (its 95% CI does not overlap the runner-up's), and EPI's win/loss count."""
    out = []
    fit = head.get("full_sft", {}).get("mixed_acc" + suffix)
    if fit is not None:
        ok = fit >= learned_floor
        out.append(f"full SFT reaches {fit:.3f} mean accuracy on the evaluation samples after mixed SFT: "
                   + ("the model does the tasks after SFT, so the comparisons below can show differences (how much "
                      "of this the model could do before SFT is not measured here)." if ok else
                      f"below {learned_floor}: the tasks are NOT learned and the comparisons below are not meaningful."))
    for metric in ("interference", "seq_forgetting", "seq_bwt", "seq_acc", "mixed_acc", "heldout_acc"):
        k = metric + suffix
        pols = [p for p in head if k in head[p] and head[p][k] == head[p][k]]
        if len(pols) < 2:
            continue
        sign = 1 if metric in LOWER_IS_BETTER else -1
        pols.sort(key=lambda p: sign * head[p][k])
        best, second = pols[0], pols[1]
        (b_lo, b_hi), (s_lo, s_hi) = head[best][k + "_ci95"], head[second][k + "_ci95"]
        decided = b_hi < s_lo if metric in LOWER_IS_BETTER else b_lo > s_hi
        ranks = ", ".join(f"{p} {head[p][k]:.3f}" for p in pols)
        if head[best][k] == head[second][k]:
            out.append(f"{k}: {best} and {second} tie at the best mean; order: {ranks}.")
            continue
        out.append(f"{k} ({'lower' if sign == 1 else 'higher'} is better): {best} leads, "
                   + ("decided (CI apart from the runner-up " if decided else "NOT decided (CI overlaps the runner-up ")
                   + f"{second}); order: {ranks}.")
    wins = [v for v in verdict if " beats " in v]
    losses = [v for v in verdict if " is beaten by " in v]
    out.append(f"EPI beats a baseline in {len(wins)} and is beaten in {len(losses)} of {len(verdict)} "
               "metric x baseline comparisons (exact match and token probability); the rest overlap.")
    out += [f"  win:  {v}" for v in wins] + [f"  loss: {v}" for v in losses]
    return out


def headline(metrics, *, keys: Sequence[str] = ("interference", "seq_acc", "seq_bwt", "seq_forgetting",
                                                  "heldout_acc", "mixed_acc", "interference_prob", "seq_acc_prob",
                                                  "seq_bwt_prob", "seq_forgetting_prob", "heldout_acc_prob",
                                                  "mixed_acc_prob")) -> dict:
    """``{policy: {key: mean, key_ci95: [lo, hi]}}`` over seeds (bootstrap, :func:`stats.with_ci`)."""
    from epi_utils.workbench import stats

    out = {}
    for pol, grp in metrics.groupby("policy", sort=False):
        d = {}
        for k in keys:
            if k in grp and grp[k].notna().any():
                d.update(stats.with_ci(k, grp[k].dropna().to_numpy()))
        out[pol] = d
    return out


def config_dict(cfg: StudyConfig) -> dict:
    return asdict(cfg)
