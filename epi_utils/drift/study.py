"""Study 01: run the design and return typed records (:class:`Result`).

One **run** = one regime (peak learning rate) x one learning-rate schedule (cosine decay or
constant) x one pretrained model (pretraining seed) x one SFT seed: mixed multi-task SFT of that
model for ``steps`` optimizer steps (:func:`epi_utils.lm.train.train_sft`). Each task's training
samples are split once per run into four disjoint, equal parts P1..P4. At every checkpoint step
(step 0 = the model before SFT) the weights are held fixed and importance is measured on each part
(:func:`epi_utils.importance.checkpoint.checkpoint_rankings`). A **measurement** is a pair of
parts: M1 = (P1, P2), M2 = (P3, P4). Statistics (Jaccard from :mod:`epi_utils.importance.drift`):

- reliability of a measurement ``R = J(P1, P2)`` (or ``J(P3, P4)``);
- drift of checkpoint t to s: M1 at step t against M2 at step s, cross-overlap ``C_ts`` = mean of
  ``J(P1_t, P4_s)`` and ``J(P2_t, P3_s)`` (no sample shared), ``D_ts = 1 - C_ts / sqrt(R_t R_s)``;
  the chance level of the overlap ``J0`` (:func:`epi_utils.drift.chance.chance_jaccard`) gives
  the chance-corrected ``D*`` (1 at chance) and what the uncorrected D reads at chance;
- **no-drift control** at the main measurement's budget: the same two measurements M1, M2 (two
  pairs of disjoint parts, independent draws) at the *same* checkpoint (the last): the very
  estimator of D with the weights unchanged, so the true drift is 0;
- **planted control**: M1 at the last checkpoint against M2 on a function-preserving permutation
  of the same weights (:func:`~epi_utils.importance.checkpoint.permute_hidden_units`): D near 1;
- **dose-response**: at the last checkpoint's weights, the top-``ablate_share`` taylor mask (part
  P1) of *every* checkpoint t is ablated in turn, and a fresh random mask of the same size beside
  each; the held-out loss increase per task. The dose is D(t, last), the response the extra loss
  of the current mask over the step-t mask.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import pandas as pd
import torch

from epi_utils.drift import chance
from epi_utils.drift.config import Config
from epi_utils.drift.inputs import Inputs, build_inputs
from epi_utils.drift.summary import Summary, summarize
from epi_utils.importance import checkpoint as ci
from epi_utils.importance import drift as dr
from epi_utils.lm.train import TrainConfig, TrainHook, train_sft
from epi_utils.workbench import progress, runs
from epi_utils.workbench.cards import Card

ALL = ci.ALL


@dataclass(frozen=True)
class PairRecord:
    """One comparison of two importance measurements (``kind``: drift between checkpoints t < s,
    or a control at the last checkpoint, where ``t == s``). ``group``: ``"all"`` parameters or a
    layer type; ``rbo_*``/``rho_*``/``chance``/``d_star`` only for ``group == "all"`` (NaN
    otherwise). ``chance``: the Jaccard of two random top-k sets; ``d_star``: the chance-corrected D."""

    kind: str
    regime: str
    schedule: str
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
    chance: float = float("nan")
    d_star: float = float("nan")
    d_at_chance: float = float("nan")
    rbo_r_t: float = float("nan")
    rbo_r_s: float = float("nan")
    rbo_ts: float = float("nan")
    rbo_d: float = float("nan")
    rho_r_t: float = float("nan")
    rho_r_s: float = float("nan")
    rho_ts: float = float("nan")

    @property
    def unit(self) -> str:
        return model_id(self.pretrain_seed)


@dataclass(frozen=True)
class AblationRecord:
    """Held-out loss of task ``task`` at step ``s`` with the ``mask`` ablated: ``"step"``, the top
    ``share`` of step ``t``'s taylor importance (part P1), or ``"random"``, a random mask of the
    same size drawn beside it."""

    regime: str
    schedule: str
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
        return model_id(self.pretrain_seed)


@dataclass(frozen=True)
class RunRecord:
    """One SFT run: its training loss at each checkpoint (mean of the steps since the previous
    one; step 0: the loss on all training samples before SFT) and the planted control's check."""

    regime: str
    schedule: str
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
    # frames and the summary, built once per state of the record lists (_memo): the notebook, `contract.save`
    # (metrics, headlines, card) and the figures all ask for them, and a summary re-reads every pair
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _cached(self, name: str, build: Callable):
        """``build()``, kept until the config or a record list changes: the records and the config are
        frozen, so a state is the sequence of those very objects, compared by identity (a record
        replaced at the same length is a new state; keying on the lists' ids and lengths missed that)."""
        state = ((len(self.runs), len(self.pairs)), (self.config, *self.runs, *self.pairs, *self.ablations))
        held = self._memo.get(name)
        if held is None or held[0][0] != state[0] or len(held[0][1]) != len(state[1]) \
                or any(x is not y for x, y in zip(held[0][1], state[1])):
            held = self._memo[name] = (state, build())
        return held[1]

    def pair_frame(self) -> pd.DataFrame:
        """One row per comparison (:class:`PairRecord`'s fields and ``unit``); a copy the caller may change."""
        return self._cached("pairs", lambda: pd.DataFrame([_row(p) | {"unit": p.unit} for p in self.pairs])).copy()

    def ablation_frame(self) -> pd.DataFrame:
        return self._cached("ablations", lambda: pd.DataFrame(
            [_row(a) | {"increase": a.increase, "unit": a.unit} for a in self.ablations])).copy()

    def run_frame(self) -> pd.DataFrame:
        return self._cached("runs", lambda: pd.DataFrame(
            [{k: v for k, v in _row(r).items() if k != "loss_at"} | {f"loss_step{s}": v for s, v in r.loss_at.items()}
             | {"unit": model_id(r.pretrain_seed)} for r in self.runs])).copy()

    def frames(self) -> dict[str, pd.DataFrame]:
        """The per-run tables: ``runs`` (one row per run), ``pairs`` (every comparison) and
        ``ablations`` (the dose-response test); column ``unit`` names the pretrained model."""
        return {"runs": self.run_frame(), "pairs": self.pair_frame(), "ablations": self.ablation_frame()}

    def summary(self) -> Summary:
        """Controls and verdicts (:func:`epi_utils.drift.summary.summarize`), computed once per state of the
        records."""
        return self._cached("summary", lambda: summarize(self))

    def metrics(self) -> dict:
        return self.summary().metrics()

    def headlines(self) -> list[str]:
        return self.summary().headlines()

    def card(self) -> Card:
        """The index's card (:meth:`epi_utils.drift.summary.Summary.card`)."""
        return self.summary().card()

    def timings(self) -> dict:
        return {"seconds_per_run": [round(r.seconds, 1) for r in self.runs],
                "statistics_seconds_per_run": [round(r.stats_seconds, 1) for r in self.runs]}


def _row(record) -> dict:
    """A record's fields as a dict (the records hold scalars only: ``dataclasses.asdict``'s deep copy, 7x
    slower on the pair records, would give the same values)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def model_id(pretrain_seed: int) -> str:
    """The unit every interval is over: one independently pretrained model."""
    return f"model{pretrain_seed}"


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
             run: tuple[str, str, int, int], t: int, s: int, rel: dict, labels: tuple[str, str],
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
                j0 = chance.chance_jaccard(k, n) if k not in rel["chance"] else rel["chance"][k]
                rel["chance"][k] = j0
                for g in j1:
                    c = 0.5 * (jx[0][g] + jx[1][g])
                    extra = {}
                    if g == "all":
                        extra = dict(chance=j0, d_star=chance.drift_index_corrected(c, j1[g], j2[g], j0),
                                     d_at_chance=chance.drift_index_at_chance(j0, j1[g], j2[g]),
                                     rbo_r_t=rbo1, rbo_r_s=rbo2, rbo_ts=rbox, rbo_d=dr.drift_index(rbox, rbo1, rbo2),
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
            schedule: str = "cosine", device: str = "cpu") -> tuple[RunRecord, list[PairRecord], list[AblationRecord]]:
    """One run (module docstring): a fresh model from ``inputs.model_fn(pretrain_seed)``, SFT on
    ``inputs.train`` under ``schedule``, the dose-response test on ``inputs.heldout``; rankings
    compared on ``device``. The parts P1..P4 and the random masks depend on (seed, pretrain_seed)
    only, so every regime and schedule of one model sees the same parts."""
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
    parts = ci.split_parts(train_samples, n_parts=4, rng=rng)
    half_a = parts[0] + parts[1]
    kw = dict(estimators=cfg.estimators, probe_batch=cfg.probe_batch, max_share=max(cfg.top_shares),
              sample_idx=sample_idx, normalize=cfg.normalize)
    stored: dict[int, list[dict]] = {}
    keep = set(cfg.checkpoints) if cfg.pairs == "all" else None
    start_state = ({k: v.detach().cpu().clone() for k, v in net.named_parameters()}
                   if cfg.ablation == "reference" else None)
    loss0 = ci.mean_loss(net, tok, train_samples, batch_size=32)

    def measure(step: int) -> None:
        stored[step] = [ci.checkpoint_rankings(net, tok, part, **kw) for part in parts]
        if keep is None:  # anchored: keep the first checkpoint and the last two only
            for old in sorted(stored)[1:-2]:
                del stored[old]

    run = (regime, schedule, pretrain_seed, seed)
    pairs: list[PairRecord] = []
    rel: dict = {"chance": {}}
    timer = [0.0]

    def _compare(t: int, s: int, m2: list[dict], kind: str, label2: str) -> None:
        """M1 = (P1, P2) at step t against M2 = (P3, P4) of ``m2`` (timed: host-side statistics)."""
        t1 = time.perf_counter()
        m1 = stored[t]
        pairs.extend(_compare_rankings(m1[0], m1[1], m2[2], m2[3], cfg=cfg, groups=groups, n=n, kind=kind, run=run,
                                       t=t, s=s, rel=rel, labels=(f"m1_step{t}", label2), device=device))
        timer[0] += time.perf_counter() - t1

    hook = _CheckpointHook(measure, cfg.checkpoints)
    if cfg.pairs == "anchored":  # compare as we go, so only three checkpoints are ever held
        orig = hook.measure

        def measure_and_compare(step: int) -> None:
            orig(step)
            for t, s in pairs_of(cfg.checkpoints, "anchored"):
                if s == step:
                    _compare(t, s, stored[s], "drift", f"m2_step{s}")
        hook.measure = measure_and_compare
    tcfg = TrainConfig(lr=lr, batch_size=cfg.batch_size, max_steps=cfg.steps, eval_every=0, eval_train=False,
                       seed=seed, schedule=schedule)
    train_sft(net, tok, [train_samples], config=tcfg, hooks=[hook], progress=False)
    if cfg.pairs == "all":
        for t, s in pairs_of(cfg.checkpoints, "all"):
            _compare(t, s, stored[s], "drift", f"m2_step{s}")
    last = cfg.checkpoints[-1]
    # no-drift control: the same two measurements at the same checkpoint (the main budget, weights unchanged)
    _compare(last, last, stored[last], "no_drift", f"m2_step{last}")
    # positive control: a function-preserving permutation of the same weights
    perm = copy.deepcopy(net)
    ci.permute_hidden_units(perm, generator=torch.Generator().manual_seed(seed + 1))
    loss_change = abs(ci.mean_loss(perm, tok, half_a) - ci.mean_loss(net, tok, half_a))
    permuted = [{}, {}] + [ci.checkpoint_rankings(perm, tok, part, **kw) for part in parts[2:]]
    del perm
    _compare(last, last, permuted, "planted", "m2_permuted")
    masks = {t: stored[t][0] for t in stored}
    ablations = dose_test(cfg, net, tok, masks, heldout=heldout, n=n, run=run, s=last, reference=start_state,
                          generator=gen)
    rec = RunRecord(regime, schedule, lr, pretrain_seed, seed, n, {0: loss0, **hook.losses}, float(loss_change),
                    time.perf_counter() - t0, timer[0])
    return rec, pairs, ablations


def dose_test(cfg: Config, net, tok, masks: dict[int, dict], *, heldout, n: int, run, s: int, reference,
              generator: torch.Generator) -> list[AblationRecord]:
    """At the current weights (those of step ``s``), ablate the top-``ablate_share`` taylor mask of
    every checkpoint t in ``masks`` (``{t: rankings of part P1}``) and a fresh random mask of the
    same size beside each; held-out loss per task and for ``"all"`` (all held-out samples)."""
    k = max(1, int(round(cfg.ablate_share * n)))
    out = []
    by_task = {task: [x for x in heldout if x.task == task] for task in sorted({x.task for x in heldout})}
    by_task[ALL] = list(heldout)
    steps = sorted(masks)
    randoms = {t: torch.randperm(n, generator=generator)[:k] for t in steps}
    for task, samples in by_task.items():
        base = ci.mean_loss(net, tok, samples)
        for t in steps:
            for name, idx in (("step", masks[t][(task, "taylor")].indices[:k]), ("random", randoms[t])):
                saved = ci.ablate(net, idx, mode=cfg.ablation, reference=reference)
                try:
                    loss = ci.mean_loss(net, tok, samples)
                finally:
                    ci.restore(net, saved)
                out.append(AblationRecord(*run, task, name, t, s, cfg.ablate_share, base, loss))
    return out


def run_study(cfg: Config, *, progress: Callable = progress.progress, inputs: Inputs | None = None) -> Result:
    """Every regime x schedule x pretrained model x SFT seed (:func:`run_one`), one ``progress``
    step per run.

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
    plan = [(r, lr, sch, p, s) for p in cfg.pretrain_seeds for r, lr in cfg.regimes for sch in cfg.schedules
            for s in cfg.sft_seeds]
    for regime, lr, sch, p, s in progress(plan, desc="run (pretrained model x regime x schedule x seed)"):
        rec, pairs, abl = run_one(cfg, inputs, regime=regime, lr=lr, schedule=sch, pretrain_seed=p, seed=s,
                                  device=device)
        result.runs.append(rec)
        result.pairs.extend(pairs)
        result.ablations.extend(abl)
    return result
