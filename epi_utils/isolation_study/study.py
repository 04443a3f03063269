"""Study 02's design: two-stage sequential SFT, every policy x isolation ratio x seed, with bounds.

One *run* = a copy of the pretrained model + one method + ``train_sft`` on the stages
(stage 0 tasks, then stage 1 tasks; the same number of optimizer steps per stage for every
method), scored at each stage end on the **held-out test** samples of every task (the primary
measure) and on some train samples (memorisation, a secondary measure). Methods:

- masking policies (:data:`config.MASKED`, :mod:`epi_utils.isolation.policies`), each at every ratio;
- ``full_sft`` (floor); ``separate``: a fresh copy of the pretrained model trained on stage 1
  alone (a separate model per stage: stage 0 is retained exactly, so its stage-0 score is
  ``full_sft``'s score after stage 0 on the same seed; the retention ceiling);
- ``replay``: full SFT whose stage 1 also holds ``replay_samples`` stored stage-0 train samples
  per stage-0 task, with the same number of optimizer steps and batch size (matched compute:
  the replayed batches replace stage-1 batches, they are not added);
- ``ewc``: online EWC whose ``lambda`` is chosen from ``ewc_lambdas`` on the **validation**
  split (a third disjoint sample set) by the mean score after stage 1, on the first seed.

Seeds vary the data sampling (which samples of a fixed pool are train / validation / test,
:func:`.inputs.seed_data`), batch order and the random masks; the pretrained model is fixed
(``pretrain_seed``) and trained once, cached (``epi_utils.lm.models``).

Interference copies (``interference_rate`` > 0): a share of stage-0 train prompts re-trained in
stage 1 with another answer, under their OWN task label ``<task>~interference``, so no policy
lets them move the weights it protects for ``<task>`` (the confound of the earlier design).
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from epi_utils.isolation.policies import make_policy
from epi_utils.isolation_study import summary
from epi_utils.isolation_study.config import Config
from epi_utils.isolation_study.inputs import Inputs, SeedData, build_inputs, seed_data
from epi_utils.lm.train import TrainConfig, TrainHook, train_sft
from epi_utils.workbench import progress as progress_mod
from epi_utils.workbench import runs
from epi_utils.workbench.executors import map_jobs


@dataclass
class RunRecord:
    """One run. Scores are per stage end, ``{task: mean score}`` (test / val: held-out)."""

    method: str
    seed: int
    ratio: float | None
    ewc_lambda: float | None
    tuning: bool
    stage_tasks: list[tuple[str, ...]]
    test: list[dict[str, float]] = field(default_factory=list)
    test_exact: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    train: list[dict[str, float]] = field(default_factory=list)
    moved_owned_stage0: float = float("nan")    # share of stage-0-owned elements (at stage 1 start) changed in stage 1
    protected_share: float = float("nan")       # share of elements protected after training
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # training loss of every optimizer step


@dataclass
class Result:
    """Every run of a study (tuning runs included), EWC's choice and the base model's facts.

    ``frames()`` are the per-run table and the summary tables of :mod:`.summary`; ``metrics()`` is
    the metrics.json payload (:func:`.summary.headline_metrics`); ``estimate`` is set by the rehearsal."""

    config: Config
    records: list[RunRecord]
    ewc_lambda: float | None
    ewc_tuning: list[dict]                      # {"ewc_lambda", "val_score"} per candidate
    stage_tasks: list[tuple[str, ...]]
    pretrain: dict
    tuning_seconds: float = 0.0
    estimate: Any = None
    _frames: dict = field(default=None, init=False, repr=False, compare=False)

    def frames(self) -> dict:
        """``runs`` (one row per run), ``frontier`` and ``memorisation`` (means with t-intervals over
        seeds), ``frontier_comparisons``, ``equal_plasticity``, ``bound_comparisons`` (paired over
        seeds) and ``ewc_tuning``: :func:`.summary.tables` of the records, computed once."""
        if self._frames is None:
            self._frames = summary.tables(self.records, self.stage_tasks, ewc_tuning=self.ewc_tuning)
        return dict(self._frames)

    def metrics(self) -> dict:
        f = self.frames()
        return summary.headline_metrics(f["runs"], f["frontier_comparisons"], f["equal_plasticity"],
                                        f["bound_comparisons"], ewc_lambda=self.ewc_lambda,
                                        ewc_tuning=self.ewc_tuning, pretrain=self.pretrain)

    def headlines(self) -> list[str]:
        return summary.headline_names(self.metrics())

    def timings(self) -> dict[str, float]:
        """Seconds per method (all seeds and ratios) and for EWC's tuning: provenance, not metrics."""
        out: dict[str, float] = {}
        for r in self.records:
            out[f"seconds/{r.method}"] = out.get(f"seconds/{r.method}", 0.0) + r.seconds
        out["seconds/ewc_tuning"] = self.tuning_seconds
        out["seconds/total"] = sum(r.seconds for r in self.records) + self.tuning_seconds
        return out


# ----------------------------------------------------------------------------- hooks
def score_sets(model, tokenizer, samples: Sequence, *, metric: dict[str, str], max_new_tokens: int,
               batch_size: int, left_padded: bool) -> tuple[dict[str, float], dict[str, float]]:
    """(primary score, exact match) per task on ``samples``: greedy decoding, grouped by prompt
    length (``left_padded=False``) or left-padded (real data), ``max_new_tokens`` = the longest
    reference + 2 capped at ``max_new_tokens`` (0: no cap)."""
    from epi_utils.lm.evaluate import generate_left_padded, greedy_generate, score_predictions, task_accuracy

    if not samples:
        return {}, {}
    longest = max(len(tokenizer(" " + s.response, add_special_tokens=False)["input_ids"]) for s in samples) + 2
    n_new = min(longest, max_new_tokens) if max_new_tokens else longest
    gen = generate_left_padded if left_padded else greedy_generate
    preds = gen(model, tokenizer, [s.prompt for s in samples], max_new_tokens=n_new, batch_size=batch_size)
    refs = [s.response for s in samples]
    exact = score_predictions(preds, refs, metric="exact")
    primary = np.array([score_predictions([p], [r], metric=metric[s.task])[0] if metric[s.task] != "exact" else e
                        for p, r, s, e in zip(preds, refs, samples, exact)])
    return task_accuracy(samples, primary), task_accuracy(samples, exact)


class StageScores(TrainHook):
    """At each stage end, scores ``sets`` (name -> samples) into ``record`` (``record.<name>``)."""

    def __init__(self, record: RunRecord, sets: dict[str, list], *, data: SeedData, cfg: Config):
        self.record, self.sets, self.data, self.cfg = record, sets, data, cfg

    def on_step_end(self, state):
        if state.stage_step != state.stage_steps:
            return
        was = state.model.training
        state.model.eval()
        for name, samples in self.sets.items():
            prim, exact = score_sets(state.model, state.tokenizer, samples, metric=self.data.metric,
                                     max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.eval_batch_size,
                                     left_padded=self.cfg.data_source == "hf")
            getattr(self.record, name).append(prim)
            if name == "test":
                self.record.test_exact.append(exact)
        state.model.train(was)


def owner_vector(policy) -> torch.Tensor | None:
    """The policy's int8 owner vector ``(n,)`` over all parameters (-1 free), or ``None``."""
    own = getattr(policy, "_owner_flat", None)
    if own is None:
        return None
    return own.to_int8() if hasattr(own, "to_int8") else own


class ProtectionProbe(TrainHook):
    """Diagnostics: tokens trained, and which share of the elements a policy owned for stage-0 tasks
    at the first stage-1 step changed during stage 1 (placed after the policy in the hook list)."""

    def __init__(self, record: RunRecord, policy, stage0_labels: Sequence[str]):
        self.record, self.policy = record, policy
        self.ids = [policy.tasks.index(t) for t in stage0_labels if t in policy.tasks]
        self.theta = self.owned = None

    def update_mask(self, state):
        own = owner_vector(self.policy) if state.stage == 1 and self.theta is None else None
        if own is not None:
            self.theta = torch.cat([p.detach().reshape(-1) for p in state.named_params.values()]).clone()
            self.owned = torch.isin(own, torch.tensor(self.ids, dtype=own.dtype, device=own.device))
        return None

    def on_step_end(self, state):
        self.record.tokens += int((state.batch["labels"] != -100).sum())
        self.record.steps += 1

    def on_train_end(self, state):
        own = owner_vector(self.policy)
        if own is not None:
            self.record.protected_share = float((own != -1).float().mean())
        if self.theta is not None and bool(self.owned.any()):
            now = torch.cat([p.detach().reshape(-1) for p in state.named_params.values()])
            self.record.moved_owned_stage0 = float((now != self.theta)[self.owned].float().mean())


# ----------------------------------------------------------------------------- runs
def build_policy(method: str, *, data: SeedData, cfg: Config, ratio: float | None, ewc_lambda: float | None):
    """The isolation policy of ``method`` (``separate`` / ``replay`` train with ``full_sft``)."""
    name = "full_sft" if method in ("separate", "replay") else method
    kw = dict(tasks=list(data.labels), isolation_ratio=ratio if ratio is not None else 0.0)
    if name in ("static_cpi", "static_grad", "importance_after_stage", "ewc"):
        kw["probe_data"] = data.probe
    if name == "static_cpi":
        kw.update(probe_steps=cfg.probe_steps, probe_lr=cfg.probe_lr)
    if name in ("epi", "epi_replay", "epi_frozen"):
        kw.update(mask_update_interval=cfg.mask_update_interval, warmup_steps=cfg.warmup_steps, beta=cfg.ema_beta,
                  replay=data.replay)
    if name in ("random_mask", "random_after_stage"):
        kw["seed"] = data.seed
    if name == "ewc":
        kw.update(ewc_lambda=ewc_lambda, schedule="sequential")
    return make_policy(name, **kw)


def _autocast(cfg: Config, device: torch.device):
    if cfg.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_one(method: str, *, data: SeedData, base, cfg: Config, ratio: float | None = None,
            ewc_lambda: float | None = None, tuning: bool = False, checkpoint_dir=None) -> RunRecord:
    """Train one run from a copy of ``base`` = ``(model, tokenizer)``; ``tuning``: score the
    validation samples only (EWC's lambda), else the test and train-eval samples."""
    runs.seed_everything(data.seed)
    model = copy.deepcopy(base[0])
    tok = base[1]
    stages = list(data.stages)
    if method == "separate":
        stages = [stages[-1]]
    elif method == "replay":
        stages = [stages[0], stages[1] + list(data.replay_samples)]
    rec = RunRecord(method=method, seed=data.seed, ratio=ratio, ewc_lambda=ewc_lambda, tuning=tuning,
                    stage_tasks=[tuple(t) for t in data.stage_tasks])
    policy = build_policy(method, data=data, cfg=cfg, ratio=ratio, ewc_lambda=ewc_lambda)
    sets = {"val": data.val} if tuning else {"test": data.test, "train": data.train_eval}
    hooks = [policy, ProtectionProbe(rec, policy, data.stage_tasks[0]), StageScores(rec, sets, data=data, cfg=cfg)]
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_steps=cfg.steps_per_stage, eval_every=0,
                       eval_train=False, seed=data.seed, warmup_ratio=0.05,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=cfg.steps_per_stage if checkpoint_dir else 0,
                       resume=False)
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    with _autocast(cfg, device):
        result = train_sft(model, tok, stages, config=tcfg, hooks=hooks, progress=False)
    rec.losses = [float(h["loss"]) for h in result.history]
    rec.seconds = time.perf_counter() - t0
    return rec


def final_score(rec: RunRecord, split: str = "test") -> float:
    """Mean score over every evaluated task after the last stage."""
    last = getattr(rec, split)[-1]
    return float(np.mean(list(last.values())))


_SHARED: dict = {}  # a worker's inputs (set once per process by _share)


def _share(base, data: dict, cfg: Config) -> None:
    _SHARED.update(base=base, data=data, cfg=cfg)


def _run_job(job: tuple) -> RunRecord:
    """One run of ``job = (method, seed, ratio, ewc_lambda, tuning, checkpoint_dir)`` on the inputs
    :func:`_share` gave this process."""
    method, seed, ratio, lam, tuning, ck = job
    return run_one(method, data=_SHARED["data"][seed], base=_SHARED["base"], cfg=_SHARED["cfg"], ratio=ratio,
                   ewc_lambda=lam, tuning=tuning, checkpoint_dir=ck)


def _run_jobs(jobs: list[tuple], *, base, data: dict, cfg: Config, desc: str) -> list[RunRecord]:
    """:func:`_run_job` over ``jobs`` in ``cfg.workers`` processes (``workbench.executors.map_jobs``; the
    same records, in job order, as one process)."""
    try:
        return map_jobs(_run_job, jobs, workers=cfg.workers, threads=torch.get_num_threads(), init=_share,
                        initargs=(base, data, cfg), desc=desc, executor=cfg.executor, **cfg.executor_options())
    finally:
        _SHARED.clear()  # in one process, the inputs were shared with this one


def choose_ewc_lambda(*, data: SeedData, base, cfg: Config) -> tuple[float, list[dict], float]:
    """The ``ewc_lambdas`` candidate with the highest mean validation score after stage 1 (ties:
    the smaller lambda), the table of candidates, and the seconds the tuning runs took."""
    jobs = [("ewc", data.seed, None, lam, True, None) for lam in cfg.ewc_lambdas]
    recs = _run_jobs(jobs, base=base, data={data.seed: data}, cfg=cfg, desc="study 02 EWC lambda")
    table = [{"ewc_lambda": lam, "val_score": final_score(rec, "val")} for lam, rec in zip(cfg.ewc_lambdas, recs)]
    best = max(table, key=lambda r: (r["val_score"], -r["ewc_lambda"]))
    return best["ewc_lambda"], table, sum(rec.seconds for rec in recs)


def jobs(cfg: Config) -> list[tuple[str, float | None]]:
    """``(method, ratio)`` of every run of one seed: the bounds, then every masking policy x ratio."""
    return [(b, None) for b in cfg.bounds] + [(m, r) for m in cfg.methods for r in cfg.ratios]


def run_study(cfg: Config, *, progress: Callable = progress_mod.progress, inputs: Inputs | None = None,
              checkpoint_root: str | None = None) -> Result:
    """Every job of :func:`jobs` on every seed (EWC's lambda chosen first, on the first seed's
    validation samples), in ``cfg.workers`` processes.

    ``inputs``: the sample pool and base model (default :func:`.inputs.build_inputs` of ``cfg``, after
    seeding the global RNGs with ``cfg.seed``); ``checkpoint_root``: folder of the per-run checkpoints
    (default with ``cfg.checkpoint_runs``: ``checkpoints/`` in the run folder). The grid reports its
    progress through ``workbench.executors.map_jobs`` (one line per run in batch runs); ``progress``
    wraps the preparation of the seeds' data.
    """
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
    if checkpoint_root is None and cfg.checkpoint_runs:
        checkpoint_root = str(runs.current_run_dir() / "checkpoints")
    base = (inputs.model, inputs.tokenizer)
    data = {s: seed_data(inputs.world, inputs.tokenizer, cfg, s)
            for s in progress(cfg.seeds, desc="study 02 seed data", unit="seed")}
    lam, tuning, tuning_s = None, [], 0.0
    if "ewc" in cfg.bounds:
        if len(cfg.ewc_lambdas) == 1:
            lam = cfg.ewc_lambdas[0]
        else:
            lam, tuning, tuning_s = choose_ewc_lambda(data=data[cfg.seeds[0]], base=base, cfg=cfg)
    todo = [(m, s, r, lam if m == "ewc" else None, False,
             None if checkpoint_root is None else f"{checkpoint_root}/{m}-{r}-{s}")
            for s in cfg.seeds for m, r in jobs(cfg)]
    records = _run_jobs(todo, base=base, data=data, cfg=cfg, desc="study 02 runs")
    pretrain = dict(inputs.pretrain)
    pretrain.setdefault("n_params", sum(p.numel() for p in inputs.model.parameters()))
    return Result(config=cfg, records=records, ewc_lambda=lam, ewc_tuning=tuning,
                  stage_tasks=data[cfg.seeds[0]].stage_tasks, pretrain=pretrain, tuning_seconds=tuning_s)
