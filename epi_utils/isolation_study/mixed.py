"""Study 02's main design (issue 26): mixed multi-task SFT, where a mask has something to evolve for.

One *run* = a copy of a pretrained model + one arm + ``train_sft`` on ONE stage holding every task's
train samples (task-homogeneous batches interleaved in a random order, as the engine's
``task_homogeneous_batches`` does), ``steps_per_stage`` optimizer steps, scored at the end on each
task's held-out **test** samples (the primary measure; validation samples in tuning runs) and on
some train samples (memorisation, secondary). Arms (:data:`.config.ARMS`):

- ``full_sft``: no isolation (the floor);
- ``separate``: one model per task, each trained on its task alone for ``steps_per_stage / n_tasks``
  steps (the steps the mixed run spends on a task on average): no interference (the ceiling, per task);
- ``cpi_ft``: CPI-FT (arXiv 2508.21741) as its paper runs it: the per-task models (= ``separate``'s, at
  its tuned learning rate) -> each task's core region = the top ``ratio`` of layer-normalised
  ``|theta_t - theta_0|`` (an element claimed by several tasks goes to the highest normalised score)
  -> the merged model: core elements transplanted from their task's model, every other element
  ``theta_0 + mean_t(theta_t - theta_0)`` (task-vector averaging) -> a final mixed SFT of
  ``steps_per_stage`` steps with every core frozen (policy ``frozen_cores``). Its per-task stage is
  extra compute the other arms do not get (stated in the report);
- ``epi``: EPI (online EMA of Taylor importance per task, masks refreshed every interval after warmup);
- ``epi_warmup_frozen``: the same EPI whose refreshes stop once every task has a mask (same
  estimator, same first masks; with EPI's tuned settings): EPI - this arm is "does evolving help";
- ``random_refresh``: random sets of the same share redrawn on EPI's schedule.

Seeds vary data sampling (which pool samples are train / validation / test), batch order, random
masks and the pretrained model: seed ``s`` starts from the model pretrained with seed
``pretrain_seed + s mod n_pretrain_seeds`` (each cached once).

Tuning (:func:`tune`): on the first seed's **validation** split, at ``tune_ratio``, every arm gets
``len(lr_grid)`` runs: ``full_sft``, ``separate``, ``cpi_ft`` (its final SFT) and ``random_refresh``
(on EPI's chosen schedule) try each learning rate of ``lr_grid``; ``epi`` tries each of ``epi_lr_grid``
with each (interval, warmup) pair, as many runs in all (:meth:`Config.check`); ``epi_warmup_frozen``
takes EPI's choice (it is EPI's ablation, not a separately tuned method: a tuning advantage, if any,
goes to EPI). The highest mean validation score over tasks wins; ties go to the earlier candidate.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from epi_utils.isolation.policies import make_policy
from epi_utils.isolation_study.config import RATIO_ARMS, Config
from epi_utils.isolation_study.inputs import INTERFERENCE, Inputs, build_inputs, seed_data
from epi_utils.isolation_study.masks import MaskTrace
from epi_utils.lm.train import TrainConfig, TrainHook, train_sft
from epi_utils.workbench import progress as progress_mod
from epi_utils.workbench import runs
from epi_utils.workbench.executors import map_jobs


@dataclass
class MixedRecord:
    """One run of the mixed design. Scores ``{task: mean score}`` at the end (test / val: held-out);
    ``hp``: the run's learning rate (and EPI's interval / warmup); ``masks``: :class:`MaskTrace`'s
    statistics (empty for arms without evolving masks)."""

    arm: str
    seed: int
    ratio: float | None
    hp: dict
    tuning: bool
    pretrain_seed: int
    test: dict[str, float] = field(default_factory=dict)
    test_exact: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    train: dict[str, float] = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


class Counter(TrainHook):
    def __init__(self, record: MixedRecord):
        self.record = record

    def on_step_end(self, state):
        self.record.tokens += int((state.batch["labels"] != -100).sum())
        self.record.steps += 1


# ----------------------------------------------------------------------------- data
@dataclass
class MixedData:
    """One seed's samples: ``train`` (task -> train samples), ``test`` / ``val`` / ``train_eval``
    (lists over every task) and the task -> metric map."""

    seed: int
    tasks: list[str]
    train: dict[str, list]
    test: list
    val: list
    train_eval: list
    metric: dict[str, str]


def mixed_data(world, tokenizer, cfg: Config, seed: int) -> MixedData:
    """The splits of :func:`.inputs.seed_data` (the same cut of each task's pool), without
    interference copies: the mixed design trains every task's clean train samples in one stage."""
    d = seed_data(world, tokenizer, cfg.replace(interference_rate=0.0, probe_batches=1, replay_batches=1,
                                                replay_samples=1), seed)
    train: dict[str, list] = {}
    for st in d.stages:
        for s in st:
            if INTERFERENCE not in s.task:
                train.setdefault(s.task, []).append(s)
    tasks = list(world.config.tasks)
    return MixedData(seed=seed, tasks=tasks, train={t: train[t] for t in tasks}, test=d.test, val=d.val,
                     train_eval=d.train_eval, metric=d.metric)


def pretrain_seed_of(cfg: Config, seed: int) -> int:
    """The pretraining seed of run seed ``seed``: ``pretrain_seed + seed mod n_pretrain_seeds``."""
    return cfg.pretrain_seed + seed % cfg.n_pretrain_seeds


# ----------------------------------------------------------------------------- one run
def _score(model, tok, samples, *, data: MixedData, cfg: Config) -> tuple[dict, dict]:
    from epi_utils.isolation_study.study import score_sets

    was = model.training
    model.eval()
    out = score_sets(model, tok, samples, metric=data.metric, max_new_tokens=cfg.max_new_tokens,
                     batch_size=cfg.eval_batch_size, left_padded=cfg.data_source == "hf")
    model.train(was)
    return out


def _train(model, tok, samples: list, *, steps: int, lr: float, seed: int, hooks: list, cfg: Config) -> list[float]:
    from epi_utils.isolation_study.study import _autocast

    tcfg = TrainConfig(lr=lr, batch_size=cfg.batch_size, max_steps=steps, eval_every=0, eval_train=False, seed=seed,
                       warmup_ratio=0.05, resume=False)
    with _autocast(cfg, next(model.parameters()).device):
        result = train_sft(model, tok, [samples], config=tcfg, hooks=hooks, progress=False)
    return [float(h["loss"]) for h in result.history]


def _finish(rec: MixedRecord, model, tok, *, data: MixedData, cfg: Config, tasks: Sequence[str] | None = None) -> None:
    """Score ``model`` into ``rec`` (val when tuning, else test and train-eval) on ``tasks`` (default all)."""
    keep = set(tasks) if tasks is not None else None
    sel = (lambda xs: xs) if keep is None else (lambda xs: [s for s in xs if s.task in keep])  # noqa: E731
    if rec.tuning:
        prim, _ = _score(model, tok, sel(data.val), data=data, cfg=cfg)
        rec.val.update(prim)
    else:
        prim, exact = _score(model, tok, sel(data.test), data=data, cfg=cfg)
        rec.test.update(prim)
        rec.test_exact.update(exact)
        if data.train_eval:
            rec.train.update(_score(model, tok, sel(data.train_eval), data=data, cfg=cfg)[0])


def masked_run(arm: str, *, data: MixedData, base, cfg: Config, ratio: float | None, hp: dict, tuning: bool,
               pretrain_seed: int) -> MixedRecord:
    """``full_sft``, ``epi``, ``epi_warmup_frozen`` or ``random_refresh``: one mixed SFT run."""
    runs.seed_everything(data.seed)
    model, tok = copy.deepcopy(base[0]), base[1]
    rec = MixedRecord(arm=arm, seed=data.seed, ratio=ratio, hp=dict(hp), tuning=tuning, pretrain_seed=pretrain_seed)
    kw: dict[str, Any] = dict(tasks=list(data.tasks), isolation_ratio=ratio or 0.0)
    if arm in ("epi", "epi_warmup_frozen"):
        kw.update(mask_update_interval=hp["interval"], warmup_steps=hp["warmup"], beta=cfg.ema_beta)
    elif arm == "random_refresh":
        kw.update(mask_update_interval=hp["interval"], warmup_steps=hp["warmup"], seed=data.seed)
    policy = make_policy(arm, **kw)
    trace = MaskTrace(policy, data.tasks)
    samples = [s for t in data.tasks for s in data.train[t]]
    t0 = time.perf_counter()
    rec.losses = _train(model, tok, samples, steps=cfg.steps_per_stage, lr=hp["lr"], seed=data.seed,
                        hooks=[policy, trace, Counter(rec)], cfg=cfg)
    if arm != "full_sft":
        rec.masks = trace.stats()
    _finish(rec, model, tok, data=data, cfg=cfg)
    rec.seconds = time.perf_counter() - t0
    return rec


def per_task_models(*, data: MixedData, base, cfg: Config, lr: float) -> dict[str, Any]:
    """One model per task, trained on that task alone for ``steps_per_stage // n_tasks`` steps."""
    steps = max(1, cfg.steps_per_stage // len(data.tasks))
    out = {}
    for k, t in enumerate(data.tasks):
        runs.seed_everything(data.seed * 1000 + k)
        model = copy.deepcopy(base[0])
        _train(model, base[1], list(data.train[t]), steps=steps, lr=lr, seed=data.seed, hooks=[], cfg=cfg)
        out[t] = model
    return out


def separate_run(*, data: MixedData, base, cfg: Config, hp: dict, tuning: bool, pretrain_seed: int) -> MixedRecord:
    """The ceiling: each task scored on its own model (:func:`per_task_models`)."""
    t0 = time.perf_counter()
    rec = MixedRecord(arm="separate", seed=data.seed, ratio=None, hp=dict(hp), tuning=tuning,
                      pretrain_seed=pretrain_seed)
    models = per_task_models(data=data, base=base, cfg=cfg, lr=hp["lr"])
    rec.steps = len(data.tasks) * max(1, cfg.steps_per_stage // len(data.tasks))
    for t, m in models.items():
        _finish(rec, m, base[1], data=data, cfg=cfg, tasks=[t])
    rec.seconds = time.perf_counter() - t0
    return rec


@torch.no_grad()
def core_regions(base_model, task_models: dict[str, Any], ratio: float):
    """CPI-FT's core regions (arXiv 2508.21741): per task, the top ``ratio`` (one global threshold) of
    its layer-mean-normalised ``|theta_t - theta_0|``. Returns ``(names, sizes, flat0, flats, scores,
    sets)``: the trainable parameter names and sizes, the flat base vector ``(n,)``, each task's flat
    vector ``(n,)``, its flat normalised scores ``(n,)`` and its bool core set ``(n,)``."""
    from epi_utils.importance.estimators import normalize_scores, top_share_flat

    names = [n for n, p in base_model.named_parameters() if p.requires_grad]
    theta0 = dict(base_model.named_parameters())
    params = {t: dict(m.named_parameters()) for t, m in task_models.items()}
    sizes = [theta0[n].numel() for n in names]
    flat0 = torch.cat([theta0[n].detach().reshape(-1) for n in names])
    flats = {t: torch.cat([params[t][n].detach().reshape(-1) for n in names]) for t in task_models}
    scores, sets = {}, {}
    for t in task_models:
        moved = {n: (params[t][n].detach() - theta0[n].detach()).abs() for n in names}
        scores[t] = torch.cat([v.reshape(-1) for v in normalize_scores(moved, how="layer_mean").values()])
        sets[t] = top_share_flat(scores[t], ratio=ratio, scope="global", sizes=sizes)
    return names, sizes, flat0, flats, scores, sets


@torch.no_grad()
def cpi_merge(base_model, task_models: dict[str, Any], ratio: float):
    """CPI-FT's transplant and merge: ``(merged model, cores)`` with ``cores`` = parameter name ->
    bool tensor (True: some task's core). Core regions: the top ``ratio`` (one global threshold) of
    each task's layer-mean-normalised ``|theta_t - theta_0|``; an element in several cores goes to
    the task with the highest normalised score; a core element takes its task's value, every other
    element ``theta_0 + mean_t(theta_t - theta_0)``."""
    tasks = list(task_models)
    names, sizes, flat0, flats, scores, sets = core_regions(base_model, task_models, ratio)
    best = torch.full_like(flat0, -math.inf)
    owner = torch.full(flat0.shape, -1, dtype=torch.long)
    for k, t in enumerate(tasks):
        better = sets[t] & (scores[t] > best)
        best = torch.where(better, scores[t], best)
        owner[better] = k
    merged_flat = flat0 + torch.stack([flats[t] - flat0 for t in tasks]).mean(dim=0)
    for k, t in enumerate(tasks):
        merged_flat = torch.where(owner == k, flats[t], merged_flat)
    merged = copy.deepcopy(base_model)
    mp = dict(merged.named_parameters())
    cores = {}
    for n, piece, core in zip(names, torch.split(merged_flat, sizes), torch.split(owner >= 0, sizes)):
        mp[n].copy_(piece.view_as(mp[n]))
        cores[n] = core.view_as(mp[n]).clone()
    return merged, cores


def cpi_runs(*, data: MixedData, base, cfg: Config, ratios: Sequence[float], hp: dict, tuning: bool,
             pretrain_seed: int) -> list[MixedRecord]:
    """CPI-FT at every ratio of ``ratios`` from one set of per-task models (``hp["sep_lr"]``); the final
    mixed SFT at ``hp["lr"]`` with the cores frozen."""
    t0 = time.perf_counter()
    models = per_task_models(data=data, base=base, cfg=cfg, lr=hp["sep_lr"])
    shared_s = (time.perf_counter() - t0) / len(ratios)
    samples = [s for t in data.tasks for s in data.train[t]]
    out = []
    for r in ratios:
        t1 = time.perf_counter()
        runs.seed_everything(data.seed)
        merged, cores = cpi_merge(base[0], models, r)
        rec = MixedRecord(arm="cpi_ft", seed=data.seed, ratio=r, hp=dict(hp), tuning=tuning,
                          pretrain_seed=pretrain_seed)
        policy = make_policy("frozen_cores", tasks=list(data.tasks), cores=cores)
        rec.losses = _train(merged, base[1], samples, steps=cfg.steps_per_stage, lr=hp["lr"], seed=data.seed,
                            hooks=[policy, Counter(rec)], cfg=cfg)
        rec.masks = {"core_share": float(sum(int(c.sum()) for c in cores.values())
                                         / sum(c.numel() for c in cores.values()))}
        _finish(rec, merged, base[1], data=data, cfg=cfg)
        rec.seconds = time.perf_counter() - t1 + shared_s
        out.append(rec)
    return out


def capacity_runs(*, data, base, cfg: Config, ratios: Sequence[float], hp: dict, pretrain_seed: int) -> list:
    """One :class:`.mixed.MixedRecord` (arm ``capacity``) per ratio of ``ratios``, one at ratio 1.0 (the
    all-parameters per-task models) and one at ratio 0.0 (the pretrained model untrained: the floor), and
    per ratio one of arm ``capacity_random`` (a random set of the same size trainable: the control), each
    holding every task's test score from its own model (:mod:`.checks` says what it shows).
    ``hp["lr"]``: the per-task learning rate (the ceiling's tuned one)."""
    t0 = time.perf_counter()
    models = per_task_models(data=data, base=base, cfg=cfg, lr=hp["lr"])
    full = MixedRecord(arm="capacity", seed=data.seed, ratio=1.0, hp=dict(hp), tuning=False,
                       pretrain_seed=pretrain_seed)
    for t, m in models.items():
        _finish(full, m, base[1], data=data, cfg=cfg, tasks=[t])
    full.seconds = time.perf_counter() - t0
    floor = MixedRecord(arm="capacity", seed=data.seed, ratio=0.0, hp=dict(hp), tuning=False,
                        pretrain_seed=pretrain_seed)
    _finish(floor, base[0], base[1], data=data, cfg=cfg)
    out = [full, floor]
    steps = max(1, cfg.steps_per_stage // len(data.tasks))
    for r in ratios:
        names, sizes, _, _, _, sets = core_regions(base[0], models, r)
        draw = torch.Generator().manual_seed(data.seed)
        for arm in ("capacity", "capacity_random"):
            t1 = time.perf_counter()
            rec = MixedRecord(arm=arm, seed=data.seed, ratio=float(r), hp=dict(hp), tuning=False,
                              pretrain_seed=pretrain_seed)
            for k, t in enumerate(data.tasks):
                runs.seed_everything(data.seed * 1000 + k)
                chosen = sets[t] if arm == "capacity" else sets[t][torch.randperm(sets[t].numel(), generator=draw)]
                model = copy.deepcopy(base[0])
                params = dict(model.named_parameters())
                frozen = {n: (~piece).view_as(params[n]).clone() for n, piece in zip(names, torch.split(chosen, sizes))}
                policy = make_policy("frozen_cores", tasks=list(data.tasks), cores=frozen)
                _train(model, base[1], list(data.train[t]), steps=steps, lr=hp["lr"], seed=data.seed,
                       hooks=[policy, Counter(rec)], cfg=cfg)
                _finish(rec, model, base[1], data=data, cfg=cfg, tasks=[t])
            rec.masks = {"trainable_share": float(r)}
            rec.seconds = time.perf_counter() - t1
            out.append(rec)
    return out


# ----------------------------------------------------------------------------- jobs
_SHARED: dict = {}


def _share(bases: dict, data: dict, cfg: Config) -> None:
    _SHARED.update(bases=bases, data=data, cfg=cfg)


def _run_job(job: tuple) -> list[MixedRecord]:
    """``job = (arm, seed, ratios, hp, tuning)``: the records of one arm on one seed (``cpi_ft``: one
    per ratio from shared per-task models; others: one)."""
    arm, seed, ratios, hp, tuning = job
    cfg, data = _SHARED["cfg"], _SHARED["data"][seed]
    ps = pretrain_seed_of(cfg, seed)
    base = _SHARED["bases"][ps]
    if arm == "capacity":
        return capacity_runs(data=data, base=base, cfg=cfg, ratios=ratios, hp=hp, pretrain_seed=ps)
    if arm == "separate":
        return [separate_run(data=data, base=base, cfg=cfg, hp=hp, tuning=tuning, pretrain_seed=ps)]
    if arm == "cpi_ft":
        return cpi_runs(data=data, base=base, cfg=cfg, ratios=ratios, hp=hp, tuning=tuning, pretrain_seed=ps)
    return [masked_run(arm, data=data, base=base, cfg=cfg, ratio=ratios[0] if ratios else None, hp=hp,
                       tuning=tuning, pretrain_seed=ps)]


def _run_jobs(jobs: list[tuple], *, bases: dict, data: dict, cfg: Config, desc: str) -> list[MixedRecord]:
    try:
        out = map_jobs(_run_job, jobs, workers=cfg.workers, threads=torch.get_num_threads(), init=_share,
                       initargs=(bases, data, cfg), desc=desc, executor=cfg.executor, **cfg.executor_options())
    finally:
        _SHARED.clear()
    return [r for recs in out for r in recs]


def val_score(rec: MixedRecord) -> float:
    return float(np.mean(list(rec.val.values()))) if rec.val else float("nan")


def _best(cands: list[dict], recs: list[MixedRecord]) -> dict:
    scores = [val_score(r) for r in recs]
    k = max(range(len(scores)), key=lambda i: (scores[i] if scores[i] == scores[i] else -1.0, -i))
    return cands[k]


def tune(*, bases: dict, data: dict, cfg: Config) -> tuple[dict[str, dict], list[dict], list[MixedRecord]]:
    """Each arm's hyperparameters chosen on the first seed's validation split (module docstring):
    ``(arm -> hp, table rows {arm, lr, interval, warmup, val_score, chosen}, tuning records)``."""
    s = cfg.seeds[0]
    r = cfg.tune_ratio
    arms = list(cfg.arms)
    lr_c = [{"lr": lr} for lr in cfg.lr_grid]
    epi_c = [{"lr": lr, "interval": i, "warmup": w} for lr in cfg.epi_lr_grid
             for i, w in zip(cfg.epi_intervals, cfg.epi_warmups)]
    need_epi = any(a in arms for a in ("epi", "epi_warmup_frozen", "random_refresh"))
    need_sep = any(a in arms for a in ("separate", "cpi_ft"))
    chosen: dict[str, dict] = {}
    table: list[dict] = []
    records: list[MixedRecord] = []

    def phase(spec: list[tuple[str, list[dict]]], desc: str):
        jobs = [(arm, s, [r] if arm in RATIO_ARMS else [], c, True) for arm, cands in spec for c in cands]
        recs = _run_jobs(jobs, bases=bases, data=data, cfg=cfg, desc=desc) if jobs else []
        records.extend(recs)
        k = 0
        for arm, cands in spec:
            mine = recs[k:k + len(cands)]
            k += len(cands)
            chosen[arm] = _best(cands, mine)
            for c, rec in zip(cands, mine):
                table.append({"arm": arm, **{"lr": c["lr"], "interval": c.get("interval", np.nan),
                                             "warmup": c.get("warmup", np.nan)},
                              "val_score": val_score(rec), "chosen": c == chosen[arm]})

    first = [("full_sft", lr_c)]
    if need_sep:
        first.append(("separate", lr_c))
    if need_epi:
        first.append(("epi", epi_c))
    phase(first, "study 02 tuning (1/2)")
    second = []
    if "cpi_ft" in arms:
        second.append(("cpi_ft", [{**c, "sep_lr": chosen["separate"]["lr"]} for c in lr_c]))
    if "random_refresh" in arms:
        e = chosen["epi"]
        second.append(("random_refresh", [{**c, "interval": e["interval"], "warmup": e["warmup"]} for c in lr_c]))
    phase(second, "study 02 tuning (2/2)")
    if "epi_warmup_frozen" in arms:
        chosen["epi_warmup_frozen"] = dict(chosen["epi"])
    return {a: chosen[a] for a in arms}, table, records


def grid_jobs(cfg: Config, hp: dict[str, dict]) -> list[tuple]:
    """Every job of the grid: per seed, the bounds, CPI-FT (all ratios in one job) and every ratio arm x ratio."""
    out = []
    for s in cfg.seeds:
        for arm in cfg.arms:
            if arm in ("full_sft", "separate"):
                out.append((arm, s, [], hp[arm], False))
            elif arm == "cpi_ft":
                out.append((arm, s, list(cfg.ratios), hp[arm], False))
            else:
                out += [(arm, s, [r], hp[arm], False) for r in cfg.ratios]
    return out


def load_bases(cfg: Config, inputs: Inputs) -> dict[int, tuple]:
    """Pretraining seed -> (model, tokenizer) for every seed of the run (``inputs.model`` is ``pretrain_seed``'s)."""
    from epi_utils.isolation_study.inputs import load_base

    bases = {cfg.pretrain_seed: (inputs.model, inputs.tokenizer)}
    for s in cfg.seeds:
        ps = pretrain_seed_of(cfg, s)
        if ps not in bases:
            if cfg.model != "tiny" or not cfg.pretrain:
                bases[ps] = bases[cfg.pretrain_seed]  # one base model (HF weights, or random init for smoke)
            else:
                model, tok, _ = load_base(cfg.replace(pretrain_seed=ps), inputs.world)
                bases[ps] = (model, tok)
    return bases


def run_mixed(cfg: Config, *, progress: Callable = progress_mod.progress, inputs: Inputs | None = None):
    """Tuning, then the grid of :func:`grid_jobs` on every seed, in ``cfg.workers`` processes: a
    :class:`epi_utils.isolation_study.mixed_summary.MixedResult`."""
    from epi_utils.isolation_study.mixed_summary import MixedResult

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = cfg.torch_device
    if cfg.workers > 1 and device.type == "cuda" and cfg.executor == "local":
        raise cfg.error("workers", "must be 1 on cuda with the local executor (worker processes are for CPU cores)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if inputs is None:
        runs.seed_everything(cfg.seed)
        inputs = build_inputs(cfg)
    bases = load_bases(cfg, inputs)
    data = {s: mixed_data(inputs.world, inputs.tokenizer, cfg, s)
            for s in progress(cfg.seeds, desc="study 02 seed data", unit="seed")}
    t0 = time.perf_counter()
    hp, tuning, tuning_recs = tune(bases=bases, data=data, cfg=cfg)
    tuning_s = time.perf_counter() - t0
    records = _run_jobs(grid_jobs(cfg, hp), bases=bases, data=data, cfg=cfg, desc="study 02 runs")
    capacity, forgetting = [], None
    if cfg.capacity_seeds:
        sep = hp.get("separate", hp["full_sft"])
        jobs = [("capacity", s, list(cfg.ratios), {"lr": sep["lr"]}, False) for s in cfg.seeds[:cfg.capacity_seeds]]
        capacity = _run_jobs(jobs, bases=bases, data=data, cfg=cfg, desc="study 02 capacity check")
    if cfg.forgetting_seeds:
        from epi_utils.isolation_study.checks import forgetting_run

        forgetting = forgetting_run(cfg, hp, inputs=inputs, progress=progress)
    pretrain = dict(inputs.pretrain)
    pretrain.setdefault("n_params", sum(p.numel() for p in inputs.model.parameters()))
    pretrain["pretrain_seeds"] = sorted(bases)
    return MixedResult(config=cfg, records=records, hp=hp, tuning=tuning, tuning_records=tuning_recs,
                       tasks=list(data[cfg.seeds[0]].tasks), pretrain=pretrain, tuning_seconds=tuning_s,
                       capacity_records=capacity, forgetting=forgetting)


def run_study(cfg: Config, *, progress: Callable = progress_mod.progress, inputs: Inputs | None = None):
    """Study 02 as ``cfg.design`` says: the mixed design (:func:`run_mixed`, a
    :class:`~epi_utils.isolation_study.mixed_summary.MixedResult`) or the two-stage one
    (:func:`epi_utils.isolation_study.study.run_study`, its ``Result``)."""
    if cfg.design == "two_stage":
        from epi_utils.isolation_study import study

        return study.run_study(cfg, progress=progress, inputs=inputs)
    return run_mixed(cfg, progress=progress, inputs=inputs)
