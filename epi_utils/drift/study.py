"""Study 01: run the design and return typed records (:class:`Result`).

One **run** = one regime (learning rate) x one pretraining seed x one SFT seed: mixed multi-task SFT
of the model for ``steps`` optimizer steps (:func:`epi_utils.lm.train.train_sft`, cosine schedule).
At every checkpoint step (step 0 = the model before SFT) the weights are held fixed and importance
is measured from the two disjoint, equal-size halves A and B of each task's training data
(:func:`epi_utils.importance.checkpoint.checkpoint_rankings`). After the last checkpoint:

- **negative control** (no drift): the last checkpoint measured twice, on four disjoint quarters of
  the data, (Q1, Q2) standing for "step t" and (Q3, Q4) for "step s": the same weights, so the true
  drift is 0 and D must be 0 within its interval;
- **positive control** (planted drift): the last checkpoint against a function-preserving
  permutation of itself (:func:`~epi_utils.importance.checkpoint.permute_hidden_units`): the
  same function, with nearly every importance value moved to another index, so D must be near 1;
- **functional test**: at the last checkpoint's weights, the top-``ablate_share`` (taylor, half A)
  mask of the first checkpoint, the one of the last checkpoint and a random mask of the same size
  are ablated in turn; the held-out loss increase of each is recorded per task.

Statistics per pair of checkpoints (t, s) (Jaccard from :mod:`epi_utils.importance.drift`):
reliability ``R_t = J(A_t, B_t)``; cross-time overlap ``C_ts`` = mean of ``J(A_t, B_s)`` and
``J(B_t, A_s)`` (cross-half: no sample shared); drift index ``D_ts = 1 - C_ts / sqrt(R_t R_s)``;
the same normalisation for rank-biased overlap at top-p and for Spearman on a fixed sample of
positions. Jaccard and D also per layer type.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from epi_utils.drift.config import Config
from epi_utils.drift.inputs import Inputs, build_inputs
from epi_utils.drift.summary import Summary, summarize
from epi_utils.importance import checkpoint as ci
from epi_utils.importance import drift as dr
from epi_utils.lm.train import TrainConfig, TrainHook, train_sft
from epi_utils.workbench import progress, runs

ALL = ci.ALL


@dataclass(frozen=True)
class PairRecord:
    """One comparison of two importance measurements (``kind``: drift between checkpoints t < s,
    or a control at the last checkpoint, where ``t == s``). ``group``: ``"all"`` parameters or a
    layer type; ``rbo_*``/``rho_*`` only for ``group == "all"`` (NaN otherwise)."""

    kind: str
    regime: str
    pretrain_seed: int
    seed: int
    task: str
    estimator: str
    share: float
    t: int
    s: int
    group: str
    r_t: float
    r_s: float
    c_ts: float
    d: float
    rbo_r_t: float = float("nan")
    rbo_r_s: float = float("nan")
    rbo_ts: float = float("nan")
    rbo_d: float = float("nan")
    rho_r_t: float = float("nan")
    rho_r_s: float = float("nan")
    rho_ts: float = float("nan")

    @property
    def unit(self) -> str:
        return run_id(self.pretrain_seed, self.seed)


@dataclass(frozen=True)
class AblationRecord:
    """Held-out loss of task ``task`` at step ``s`` with the ``mask`` (top ``share`` of step
    ``t``'s or step ``s``'s taylor importance, or random) ablated."""

    regime: str
    pretrain_seed: int
    seed: int
    task: str
    mask: str
    t: int
    s: int
    share: float
    loss_base: float
    loss_ablated: float

    @property
    def increase(self) -> float:
        return self.loss_ablated - self.loss_base

    @property
    def unit(self) -> str:
        return run_id(self.pretrain_seed, self.seed)


@dataclass(frozen=True)
class RunRecord:
    """One SFT run: its training loss at each checkpoint (mean of the steps since the previous
    one; step 0: the loss on all training samples before SFT) and the planted control's check."""

    regime: str
    lr: float
    pretrain_seed: int
    seed: int
    n_params: int
    loss_at: dict[int, float]
    planted_loss_change: float  # |loss after - before| of the function-preserving permutation
    seconds: float
    stats_seconds: float = 0.0  # of which: comparing rankings (host-side statistics)


@dataclass
class Result:
    """What :func:`run_study` returns: the config that ran (a rehearsal's toy config) and the typed
    records; ``estimate`` holds a rehearsal's full-scale cost (``Estimate.to_dict()`` plus the
    statistics' share), ``None`` for a full run."""

    config: Config
    runs: list[RunRecord] = field(default_factory=list)
    pairs: list[PairRecord] = field(default_factory=list)
    ablations: list[AblationRecord] = field(default_factory=list)
    estimate: dict | None = None

    def pair_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{**asdict(p), "unit": p.unit} for p in self.pairs])

    def ablation_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{**asdict(a), "increase": a.increase, "unit": a.unit} for a in self.ablations])

    def run_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in asdict(r).items() if k != "loss_at"} | {
            f"loss_step{s}": v for s, v in r.loss_at.items()} | {"unit": run_id(r.pretrain_seed, r.seed)}
            for r in self.runs])

    def frames(self) -> dict[str, pd.DataFrame]:
        """The per-unit tables: ``runs`` (one row per run), ``pairs`` (every comparison) and
        ``ablations`` (the functional test)."""
        return {"runs": self.run_frame(), "pairs": self.pair_frame(), "ablations": self.ablation_frame()}

    def summary(self) -> Summary:
        """Controls and verdicts (:func:`epi_utils.drift.summary.summarize`)."""
        return summarize(self)

    def metrics(self) -> dict:
        return self.summary().metrics()

    def headlines(self) -> list[str]:
        return self.summary().headlines()

    def timings(self) -> dict:
        return {"seconds_per_run": [round(r.seconds, 1) for r in self.runs],
                "statistics_seconds_per_run": [round(r.stats_seconds, 1) for r in self.runs]}


def run_id(pretrain_seed: int, seed: int) -> str:
    """The unit an interval is over: one (pretraining seed, SFT seed) run."""
    return f"pretrain{pretrain_seed}/seed{seed}"


# --------------------------------------------------------------------------------------------
class _CheckpointHook(TrainHook):
    """Measures rankings at the configured steps (step 0 before the first update)."""

    def __init__(self, measure, steps: list[int]):
        self.measure, self.steps, self.losses, self._since = measure, set(steps), {}, []

    def on_train_begin(self, state):
        if 0 in self.steps:
            self.measure(0)

    def on_step_end(self, state):
        self._since.append(state.loss)
        if state.step in self.steps:
            self.losses[state.step] = float(np.mean(self._since))
            self._since = []
            self.measure(state.step)


def _compare_rankings(ra: dict, rb: dict, ra2: dict, rb2: dict, *, cfg: Config, groups, n: int, kind: str,
             run: tuple[str, int, int], t: int, s: int, rel: dict, labels: tuple[str, str],
             device="cpu") -> list[PairRecord]:
    """PairRecords for measurement 1 = (ra, rb) (halves A, B) against measurement 2 = (ra2, rb2);
    ``labels`` name the two measurements for the reliability cache ``rel``. The rankings are
    compared on ``device`` (the run's device: on a GPU the n-sized maps cost milliseconds)."""
    out = []
    tasks = sorted({task for task, _ in ra})
    groups = (groups[0], groups[1].to(device))
    for task in tasks:
        for est in cfg.estimators:
            a1, b1, a2, b2 = (ci.Ranking(x[(task, est)].indices.to(device), x[(task, est)].sample, n)
                              for x in (ra, rb, ra2, rb2))
            inv = {name: dr.inverse_ranking(r.indices, n=n) for name, r in (("b1", b1), ("b2", b2), ("a2", a2))}
            key1, key2 = (labels[0], task, est), (labels[1], task, est)
            for key, a, b in ((key1, a1, b1), (key2, a2, b2)):
                if key not in rel:
                    rel[key] = {"rho": dr.spearman_vectors(a.sample, b.sample)}
            rhox = 0.5 * (dr.spearman_vectors(a1.sample, b2.sample) + dr.spearman_vectors(b1.sample, a2.sample))
            for share in cfg.top_shares:
                k = max(1, int(round(share * n)))
                for key, a, b, ib in ((key1, a1, b1, inv["b1"]), (key2, a2, b2, inv["b2"])):
                    if k not in rel[key]:
                        rel[key][k] = (dr.topk_jaccard(a.indices, b.indices, k=k, n=n, groups=groups, inv_b=ib),
                                       dr.rbo(a.indices, b.indices, k=k, n=n, inv_b=ib))
                (j1, rbo1), (j2, rbo2) = rel[key1][k], rel[key2][k]
                rho1, rho2 = rel[key1]["rho"], rel[key2]["rho"]
                jx = [dr.topk_jaccard(a1.indices, b2.indices, k=k, n=n, groups=groups, inv_b=inv["b2"]),
                      dr.topk_jaccard(b1.indices, a2.indices, k=k, n=n, groups=groups, inv_b=inv["a2"])]
                rbox = 0.5 * (dr.rbo(a1.indices, b2.indices, k=k, n=n, inv_b=inv["b2"])
                              + dr.rbo(b1.indices, a2.indices, k=k, n=n, inv_b=inv["a2"]))
                for g in j1:
                    c = 0.5 * (jx[0][g] + jx[1][g])
                    extra = {}
                    if g == "all":
                        extra = dict(rbo_r_t=rbo1, rbo_r_s=rbo2, rbo_ts=rbox, rbo_d=dr.drift_index(rbox, rbo1, rbo2),
                                     rho_r_t=rho1, rho_r_s=rho2, rho_ts=rhox)
                    out.append(PairRecord(kind, *run, task, est, share, t, s, g, j1[g], j2[g], c,
                                          dr.drift_index(c, j1[g], j2[g]), **extra))
    return out


def pairs_of(checkpoints: list[int], mode: str) -> list[tuple[int, int]]:
    """All pairs t < s, or (``anchored``) each s against the first checkpoint and its predecessor."""
    if mode == "all":
        return [(t, s) for i, t in enumerate(checkpoints) for s in checkpoints[i + 1:]]
    out = []
    for i, s in enumerate(checkpoints[1:], start=1):
        out += [(checkpoints[0], s)] + ([(checkpoints[i - 1], s)] if i > 1 else [])
    return out


def run_one(cfg: Config, inputs: Inputs, *, regime: str, lr: float, pretrain_seed: int, seed: int,
            device: str = "cpu") -> tuple[RunRecord, list[PairRecord], list[AblationRecord]]:
    """One run (module docstring): a fresh model from ``inputs.model_fn(pretrain_seed)``, SFT on
    ``inputs.train``, the functional test on ``inputs.heldout``; rankings compared on ``device``."""
    t0 = time.perf_counter()
    train_samples, heldout = inputs.train, inputs.heldout
    net, tok = inputs.model_fn(pretrain_seed)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    sizes = [p.numel() for n, p in net.named_parameters() if p.requires_grad]
    n = int(sum(sizes))
    groups = ci.group_ids(names, sizes)
    gen = torch.Generator().manual_seed(10_007 * seed + pretrain_seed)
    sample_idx = torch.randint(0, n, (min(cfg.spearman_sample, n),), generator=gen)
    rng = np.random.default_rng([seed, pretrain_seed])
    half_a, half_b = ci.split_parts(train_samples, n_parts=2, rng=rng)
    quarters = ci.split_parts(train_samples, n_parts=4, rng=rng)
    kw = dict(estimators=cfg.estimators, probe_batch=cfg.probe_batch, max_share=max(cfg.top_shares),
              sample_idx=sample_idx, normalize=cfg.normalize)
    stored: dict[int, tuple[dict, dict]] = {}
    keep = set(cfg.checkpoints) if cfg.pairs == "all" else None
    start_state = ({k: v.detach().cpu().clone() for k, v in net.named_parameters()}
                   if cfg.ablation == "reference" else None)
    loss0 = ci.mean_loss(net, tok, train_samples, batch_size=32)

    def measure(step: int) -> None:
        stored[step] = (ci.checkpoint_rankings(net, tok, half_a, **kw), ci.checkpoint_rankings(net, tok, half_b, **kw))
        if keep is None:  # anchored: keep the first checkpoint and the last two only
            for old in sorted(stored)[1:-2]:
                del stored[old]

    run = (regime, pretrain_seed, seed)
    pairs: list[PairRecord] = []
    rel: dict = {}
    timer = [0.0]

    def _compare(*args, **kw):  # the module-level comparison, timed (host-side statistics cost)
        t1 = time.perf_counter()
        out = _compare_rankings(*args, device=device, **kw)
        timer[0] += time.perf_counter() - t1
        return out
    hook = _CheckpointHook(measure, cfg.checkpoints)
    if cfg.pairs == "anchored":  # compare as we go, so only three checkpoints are ever held
        orig = hook.measure

        def measure_and_compare(step: int) -> None:
            orig(step)
            for t, s in pairs_of(cfg.checkpoints, "anchored"):
                if s == step:
                    pairs.extend(_compare(*stored[t], *stored[s], cfg=cfg, groups=groups, n=n, kind="drift",
                                          run=run, t=t, s=s, rel=rel, labels=(f"step{t}", f"step{s}")))
        hook.measure = measure_and_compare
    tcfg = TrainConfig(lr=lr, batch_size=cfg.batch_size, max_steps=cfg.steps, eval_every=0, eval_train=False,
                       seed=seed, schedule="cosine")
    train_sft(net, tok, [train_samples], config=tcfg, hooks=[hook], progress=False)
    if cfg.pairs == "all":
        for t, s in pairs_of(cfg.checkpoints, "all"):
            pairs.extend(_compare(*stored[t], *stored[s], cfg=cfg, groups=groups, n=n, kind="drift", run=run,
                                  t=t, s=s, rel=rel, labels=(f"step{t}", f"step{s}")))
    first, last = cfg.checkpoints[0], cfg.checkpoints[-1]
    # negative control: the same weights measured on quarters (Q1, Q2) vs (Q3, Q4)
    qr = [ci.checkpoint_rankings(net, tok, q, **kw) for q in quarters]
    pairs.extend(_compare(qr[0], qr[1], qr[2], qr[3], cfg=cfg, groups=groups, n=n, kind="no_drift", run=run,
                          t=last, s=last, rel=rel, labels=("q12", "q34")))
    # positive control: a function-preserving permutation of the same weights
    perm = copy.deepcopy(net)
    ci.permute_hidden_units(perm, generator=torch.Generator().manual_seed(seed + 1))
    loss_change = abs(ci.mean_loss(perm, tok, half_a) - ci.mean_loss(net, tok, half_a))
    pr = (ci.checkpoint_rankings(perm, tok, half_a, **kw), ci.checkpoint_rankings(perm, tok, half_b, **kw))
    del perm
    pairs.extend(_compare(*stored[last], *pr, cfg=cfg, groups=groups, n=n, kind="planted", run=run, t=last, s=last,
                          rel=rel, labels=(f"step{last}", "permuted")))
    ablations = functional_test(cfg, net, tok, stored[first][0], stored[last][0], heldout=heldout, n=n, run=run,
                                t=first, s=last, reference=start_state, generator=gen)
    rec = RunRecord(regime, lr, pretrain_seed, seed, n, {0: loss0, **hook.losses}, float(loss_change),
                    time.perf_counter() - t0, timer[0])
    return rec, pairs, ablations


def functional_test(cfg: Config, net, tok, rank_t: dict, rank_s: dict, *, heldout, n: int, run, t: int, s: int,
                    reference, generator: torch.Generator) -> list[AblationRecord]:
    """Ablate the step-t, step-s and a random top-``ablate_share`` mask at the current weights
    (those of step s); held-out loss per task and for ``"all"`` (all held-out samples)."""
    k = max(1, int(round(cfg.ablate_share * n)))
    out = []
    by_task = {task: [x for x in heldout if x.task == task] for task in sorted({x.task for x in heldout})}
    by_task[ALL] = list(heldout)
    for task, samples in by_task.items():
        base = ci.mean_loss(net, tok, samples)
        masks = {"step_t": rank_t[(task, "taylor")].indices[:k], "step_s": rank_s[(task, "taylor")].indices[:k],
                 "random": torch.randperm(n, generator=generator)[:k]}
        for name, idx in masks.items():
            saved = ci.ablate(net, idx, mode=cfg.ablation, reference=reference)
            try:
                loss = ci.mean_loss(net, tok, samples)
            finally:
                ci.restore(net, saved)
            out.append(AblationRecord(*run, task, name, t, s, cfg.ablate_share, base, loss))
    return out


def run_study(cfg: Config, *, progress: Callable = progress.progress, inputs: Inputs | None = None) -> Result:
    """Every regime x pretraining seed x SFT seed (:func:`run_one`), one ``progress`` step per run.

    Seeds the run (``seed_everything(cfg.seed)``) and builds its inputs from ``cfg``
    (:func:`~epi_utils.drift.inputs.build_inputs`) unless ``inputs`` are given (the rehearsal's
    toy world, samples and model).
    """
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    runs.seed_everything(cfg.seed)
    inputs = build_inputs(cfg) if inputs is None else inputs
    device = str(cfg.torch_device)
    result = Result(config=cfg)
    plan = [(r, lr, p, s) for r, lr in cfg.regimes for p in cfg.pretrain_seeds for s in cfg.sft_seeds]
    for regime, lr, p, s in progress(plan, desc="run (regime x pretraining seed x seed)"):
        rec, pairs, abl = run_one(cfg, inputs, regime=regime, lr=lr, pretrain_seed=p, seed=s, device=device)
        result.runs.append(rec)
        result.pairs.extend(pairs)
        result.ablations.extend(abl)
    return result
