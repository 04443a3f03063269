"""Study 01 summaries: intervals over runs, the two controls, and verdicts from ``stats.compare``.

Every interval is a Student-t interval over runs (one run = one pretraining seed x one SFT seed,
:attr:`Config.unit`), every comparison is paired over the same runs. The headline cell is the
drift index ``D(first, last)`` of the pseudo-task ``"all"``, estimator ``taylor``, at
``headline_share``, all parameters.

Controls (the project's standard: "controls that can fail"), for the headline cell, per regime:
- ``no_drift``: D of the last checkpoint measured twice (disjoint quarters). Passes when D's
  interval lies within ``[-null_margin, null_margin]`` (an equivalence criterion: with tight
  intervals a strict "contains 0" fails on a bias of a few thousandths; the first full cpu run gave
  D = 0.007 [0.003, 0.012] for taylor at lr 2e-4).
- ``planted``: D of the last checkpoint against its function-preserving permutation. Passes when
  D's interval lies above ``planted_min_d`` and the permutation changed the loss by < 1e-4.
Controls are computed for every estimator; those of the headline estimator gate the verdict:
:class:`Summary` refuses an answer (``answer`` says why) when one of them fails.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from epi_utils.workbench import stats

HEADLINE_ESTIMATOR = "taylor"
MASKS = ("step_t", "step_s", "random")
PLANTED_LOSS_TOLERANCE = 1e-4


def by_unit(frame, column: str = "d", **filters) -> dict[str, float]:
    """``{unit: value}`` of ``column`` over the rows matching ``filters`` (one row per unit)."""
    sub = frame
    for k, v in filters.items():
        sub = sub[sub[k] == v]
    if sub["unit"].duplicated().any():
        raise ValueError(f"filters {filters} leave several rows per run; add a filter")
    return dict(zip(sub["unit"], sub[column].astype(float)))


@dataclass(frozen=True)
class ControlOutcome:
    control: str
    regime: str
    estimator: str
    d: stats.Interval
    passed: bool
    criterion: str

    @property
    def gates_verdict(self) -> bool:
        """Only the headline estimator's controls gate the verdict (the others are reported)."""
        return self.estimator == HEADLINE_ESTIMATOR

    def to_dict(self) -> dict:
        return {"control": self.control, "regime": self.regime, "estimator": self.estimator,
                "d": self.d.to_dict(), "passed": self.passed, "criterion": self.criterion,
                "gates_verdict": self.gates_verdict}


@dataclass(frozen=True)
class RegimeResult:
    """The headline cell of one regime, its reliability, and the paired verdicts."""

    regime: str
    lr: float
    d: stats.Interval
    r_first: stats.Interval
    r_last: stats.Interval
    c: stats.Interval
    beyond_noise: stats.Comparison       # D(first, last) - D(no-drift control)
    d_late: stats.Interval               # D(second-to-last, last): drift once training has settled
    late_beyond_noise: stats.Comparison  # D(second-to-last, last) - D(no-drift control)
    functional_s_vs_t: stats.Comparison  # loss increase: step-s mask - step-t mask (at step-s weights)
    functional_t_vs_random: stats.Comparison
    loss_first: float
    loss_last: float


@dataclass
class Summary:
    config: object
    controls: list[ControlOutcome]
    regimes: list[RegimeResult]
    t: int
    s: int
    t_late: int
    share: float
    notes: list[str] = field(default_factory=list)

    @property
    def controls_pass(self) -> bool:
        gating = [c for c in self.controls if c.gates_verdict]
        return bool(gating) and all(c.passed for c in gating)

    @property
    def refusal(self) -> str | None:
        failed = [c for c in self.controls if c.gates_verdict and not c.passed]
        if not failed:
            return None
        return "no verdict: control(s) failed: " + "; ".join(
            f"{c.control} ({c.regime}, {c.estimator}) D = {c.d.mean:.3f} [{c.d.low:.3f}, {c.d.high:.3f}], "
            f"needed {c.criterion}" for c in failed)

    def answer(self) -> str:
        """The study's answer, built from the verdicts (or the refusal)."""
        if self.refusal:
            return self.refusal
        lines = []
        for r in self.regimes:
            v = r.beyond_noise.verdict
            what = ("drifts beyond the estimator's own noise" if v is stats.Verdict.A_BETTER else
                    "does not drift beyond the estimator's own noise" if v is stats.Verdict.NO_DIFFERENCE else
                    "drifts LESS than the no-drift control (check the control)" if v is stats.Verdict.B_BETTER else
                    "cannot be judged (not enough runs)")
            f = r.functional_s_vs_t
            fun = ("the current mask hurts more than the start mask when ablated" if f.verdict is stats.Verdict.A_BETTER
                   else "the start mask hurts more than the current mask" if f.verdict is stats.Verdict.B_BETTER
                   else f"no loss difference between the masks (smallest detectable {f.detectable:.3g})"
                   if f.verdict is stats.Verdict.NO_DIFFERENCE else "functional test: not enough runs")
            late = r.late_beyond_noise
            small = r.d_late.high <= self.config.null_margin
            late_what = (f"still drifts beyond noise, though by less than the no-drift margin "
                         f"{self.config.null_margin:g}" if late.verdict is stats.Verdict.A_BETTER and small else
                         "still drifts beyond noise" if late.verdict is stats.Verdict.A_BETTER else
                         f"shows no drift beyond noise (smallest detectable {late.detectable:.3g})"
                         if late.verdict is stats.Verdict.NO_DIFFERENCE else "is not distinguishable from the control")
            lines.append(f"{r.regime} (lr {r.lr:g}): the top-{self.share:.0%} critical set {what}: "
                         f"D(step {self.t}, step {self.s}) = {r.d.mean:.3f} [{r.d.low:.3f}, {r.d.high:.3f}] "
                         f"({r.d.label()}), reliability {r.r_first.mean:.2f} -> {r.r_last.mean:.2f}; "
                         f"between the last two checkpoints it {late_what}: D(step {self.t_late}, step {self.s}) = "
                         f"{r.d_late.mean:.3f} [{r.d_late.low:.3f}, {r.d_late.high:.3f}]; {fun}.")
        return "\n".join(lines)

    def metrics(self) -> dict:
        """Nested numbers for ``runs.save_metrics``: intervals in the platform's metrics form
        (``name_ci95: [low, high]``, read by the report index; tables use ``_low``/``_high``) with
        their unit; verdicts as data."""
        out: dict = {"headline_cell": {"task": "all", "estimator": HEADLINE_ESTIMATOR, "share": self.share,
                                       "t": self.t, "s": self.s, "t_late": self.t_late, "group": "all"},
                     "controls_pass": self.controls_pass, "controls": [c.to_dict() for c in self.controls],
                     "answer": self.answer()}
        for r in self.regimes:
            m = {"lr": r.lr, "loss_first": r.loss_first, "loss_last": r.loss_last}
            for name, iv in (("drift_index", r.d), ("reliability_first", r.r_first), ("reliability_last", r.r_last),
                             ("cross_overlap", r.c), ("drift_index_late", r.d_late)):
                m.update({name: iv.mean, f"{name}_ci95": [iv.low, iv.high], f"{name}_ci_unit": f"{iv.n} {iv.unit}"})
            m["drift_beyond_noise"] = r.beyond_noise.to_dict()
            m["late_drift_beyond_noise"] = r.late_beyond_noise.to_dict()
            m["functional_current_vs_start_mask"] = r.functional_s_vs_t.to_dict()
            m["functional_start_mask_vs_random"] = r.functional_t_vs_random.to_dict()
            out[r.regime] = m
        return out

    def report(self) -> str:
        """The answer, then per regime the training loss and the three paired comparisons as sentences."""
        lines = [self.answer(), ""]
        for r in self.regimes:
            lines.append(f"[{r.regime}] training loss {r.loss_first:.2f} -> {r.loss_last:.2f}")
            lines += ["  " + c.sentence() for c in (r.beyond_noise, r.functional_s_vs_t, r.functional_t_vs_random)]
        return "\n".join(lines)

    def headline_table(self):
        """The headline numbers per regime: D(first, last) with its interval (``_low``/``_high``), the
        reliabilities at both ends, the late D, and whether the controls pass."""
        return pd.DataFrame([{"regime": r.regime, "drift_index": r.d.mean, "drift_index_low": r.d.low,
                              "drift_index_high": r.d.high, "reliability_first": r.r_first.mean,
                              "reliability_last": r.r_last.mean, "drift_index_late": r.d_late.mean,
                              "n": r.d.n, "unit": r.d.unit, "controls_pass": self.controls_pass}
                             for r in self.regimes])

    def headlines(self) -> list[str]:
        names = ["controls_pass"]
        for r in self.regimes:
            names += [f"{r.regime}.drift_index", f"{r.regime}.reliability_last", f"{r.regime}.drift_index_late"]
        return names


def summarize(result) -> Summary:
    """Controls and verdicts of ``result`` (a :class:`epi_utils.drift.study.Result`; module docstring)."""
    cfg = result.config
    pf, af, rf = result.pair_frame(), result.ablation_frame(), result.run_frame()
    t, s, share = cfg.checkpoints[0], cfg.checkpoints[-1], cfg.headline_share
    t_late = cfg.checkpoints[-2]
    unit = cfg.unit
    cell = dict(task="all", share=share, group="all")
    controls, regimes = [], []
    for regime, lr in cfg.regimes:
        for est in cfg.estimators:
            nod = by_unit(pf, kind="no_drift", regime=regime, estimator=est, **cell)
            pla = by_unit(pf, kind="planted", regime=regime, estimator=est, **cell)
            iv_n = stats.interval(list(nod.values()), unit=unit)
            iv_p = stats.interval(list(pla.values()), unit=unit)
            m = cfg.null_margin
            controls.append(ControlOutcome("no_drift", regime, est, iv_n, bool(-m <= iv_n.low and iv_n.high <= m),
                                           f"interval within [-{m:g}, {m:g}]"))
            loss_ok = bool((rf[rf["regime"] == regime]["planted_loss_change"] < PLANTED_LOSS_TOLERANCE).all())
            controls.append(ControlOutcome("planted", regime, est, iv_p,
                                           bool(iv_p.low >= cfg.planted_min_d and loss_ok),
                                           f"interval above {cfg.planted_min_d} and an unchanged loss"))
        main = by_unit(pf, kind="drift", regime=regime, estimator=HEADLINE_ESTIMATOR, t=t, s=s, **cell)
        late = by_unit(pf, kind="drift", regime=regime, estimator=HEADLINE_ESTIMATOR, t=t_late, s=s, **cell)
        nod = by_unit(pf, kind="no_drift", regime=regime, estimator=HEADLINE_ESTIMATOR, **cell)
        rows = pf[(pf["kind"] == "drift") & (pf["regime"] == regime) & (pf["estimator"] == HEADLINE_ESTIMATOR)
                  & (pf["t"] == t) & (pf["s"] == s) & (pf["task"] == "all") & (pf["share"] == share)
                  & (pf["group"] == "all")]
        ab = af[(af["regime"] == regime) & (af["task"] == "all")]
        inc = {m: by_unit(ab, "increase", mask=m) for m in MASKS}
        label = f"D top-{share:.0%} taylor 'all'"
        runs = rf[rf["regime"] == regime]
        regimes.append(RegimeResult(
            regime=regime, lr=lr,
            d=stats.interval(list(main.values()), unit=unit),
            r_first=stats.interval(rows["r_t"].to_numpy(float), unit=unit),
            r_last=stats.interval(rows["r_s"].to_numpy(float), unit=unit),
            c=stats.interval(rows["c_ts"].to_numpy(float), unit=unit),
            beyond_noise=stats.compare(main, nod, unit=unit, metric=label, a_name=f"D(step {t}, step {s})",
                                       b_name="D(no-drift control)"),
            d_late=stats.interval(list(late.values()), unit=unit),
            late_beyond_noise=stats.compare(late, nod, unit=unit, metric=label, a_name=f"D(step {t_late}, step {s})",
                                            b_name="D(no-drift control)"),
            functional_s_vs_t=stats.compare(inc["step_s"], inc["step_t"], unit=unit, metric="held-out loss increase",
                                            a_name=f"step-{s} mask", b_name=f"step-{t} mask"),
            functional_t_vs_random=stats.compare(inc["step_t"], inc["random"], unit=unit,
                                                 metric="held-out loss increase", a_name=f"step-{t} mask",
                                                 b_name="random mask"),
            loss_first=float(runs[f"loss_step{t}"].mean()), loss_last=float(runs[f"loss_step{s}"].mean())))
    return Summary(config=cfg, controls=controls, regimes=regimes, t=t, s=s, t_late=t_late, share=share)


def control_table(summary: Summary):
    """Controls as a DataFrame (D with its interval, the criterion, pass/fail)."""
    return pd.DataFrame([{"control": c.control, "regime": c.regime, "estimator": c.estimator, "d": c.d.mean,
                          "d_low": c.d.low, "d_high": c.d.high, "interval": c.d.label(), "criterion": c.criterion,
                          "passed": c.passed, "gates_verdict": c.gates_verdict} for c in summary.controls])


def _first_last(result):
    """Drift pairs D(first, last) of ``result``'s pair frame."""
    cfg = result.config
    pf = result.pair_frame()
    return pf[(pf["kind"] == "drift") & (pf["t"] == cfg.checkpoints[0]) & (pf["s"] == cfg.checkpoints[-1])]


def layer_table(result, *, estimator: str = HEADLINE_ESTIMATOR):
    """D(first, last) per regime and layer type (and ``all``), pseudo-task ``"all"``, headline share:
    D, R_t, R_s, C_ts with t-intervals over runs."""
    cfg = result.config
    pf = _first_last(result)
    cell = pf[(pf["task"] == "all") & (pf["estimator"] == estimator) & (pf["share"] == cfg.headline_share)]
    return stats.interval_table(cell, by=["regime", "group"], columns=("d", "r_t", "r_s", "c_ts"), unit=cfg.unit)


def task_table(result):
    """D(first, last) per regime, gradient-based estimator and task (and ``"all"``) at the headline
    share, all parameters, with R_t, R_s, C_ts; t-intervals over runs."""
    cfg = result.config
    pf = _first_last(result)
    sub = pf[(pf["group"] == "all") & (pf["share"] == cfg.headline_share) & (pf["estimator"] != "magnitude")]
    return stats.interval_table(sub, by=["regime", "estimator", "task"], columns=("d", "r_t", "r_s", "c_ts"),
                                unit=cfg.unit)


def measure_table(result):
    """The measures of D(first, last) for ``"all"`` at every share: Jaccard's D, RBO's D and
    Spearman's rho within and across checkpoints; t-intervals over runs."""
    cfg = result.config
    pf = _first_last(result)
    sub = pf[(pf["group"] == "all") & (pf["task"] == "all")]
    return stats.interval_table(sub, by=["regime", "estimator", "share"],
                                columns=("d", "rbo_d", "rho_r_t", "rho_r_s", "rho_ts"), unit=cfg.unit)


def functional_table(result):
    """Held-out loss increase per regime, task and mask: mean and t-interval over runs, plus the
    paired comparison step-s mask vs step-t mask per task (verdict and smallest detectable effect)."""
    cfg = result.config
    af = result.ablation_frame()
    keys = ["regime", "task", "pretrain_seed", "seed", "unit"]
    wide = af.pivot_table(index=keys, columns="mask", values="increase", sort=False).reset_index()
    tab = stats.interval_table(wide, by=["regime", "task"], columns=MASKS, unit=cfg.unit)
    verdicts = []
    for (regime, task), sub in af.groupby(["regime", "task"], sort=False):
        cmp = stats.compare(by_unit(sub, "increase", mask="step_s"), by_unit(sub, "increase", mask="step_t"),
                            unit=cfg.unit, metric="loss increase")
        verdicts.append({"regime": regime, "task": task, "s_minus_t": cmp.diff.mean, "verdict": cmp.verdict.value,
                         "detectable": cmp.detectable})
    return tab.merge(pd.DataFrame(verdicts), on=["regime", "task"]).sort_values(["regime", "task"], ignore_index=True)
