"""Study 01 summaries: intervals over pretrained models, the two controls, verdicts from ``stats.compare``.

**The unit of every interval is the independently pretrained model** (:attr:`Config.unit`): the
records of a model's SFT seeds are averaged first (:func:`model_means`, :func:`by_unit`), then the
Student-t interval is over the models; every comparison is paired over the same models. An **arm**
is one regime (peak learning rate) x one schedule (cosine or constant). The headline cell is the
drift index ``D(first, last)`` of the pseudo-task ``"all"``, estimator ``taylor``, at
``headline_share``, all parameters; ``D*`` is its chance-corrected form (1 at chance).

Controls ("controls that can fail"), for the headline cell, per arm:
- ``no_drift``: the main measurement's two measurements (two pairs of disjoint parts) at the same
  checkpoint, the weights unchanged. Passes when D's interval lies within ``[-null_margin,
  null_margin]`` (an equivalence criterion fixed in the config before the run).
- ``planted``: the last checkpoint against its function-preserving permutation. Passes when D's
  interval lies above ``planted_min_d`` and the permutation changed the loss by < 1e-4.
Only the headline estimator's controls gate the verdict: :class:`Summary` refuses an answer
(``answer`` says why) when one of them fails.

**Dose-response** (:mod:`epi_utils.drift.dose_response`): at the last weights, the top masks of the
checkpoints t < last are ablated; dose ``D(t, last)`` (taylor, at ``ablate_share`` when it is one of
``top_shares``, else at ``headline_share``), response the extra held-out loss of the last mask over
the step-t mask. If D tracks what matters, the slope is positive. Control: the same slope with a
random mask in place of the step-t mask (no relation to D: slope ~0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from epi_utils.drift import dose_response
from epi_utils.workbench import stats
from epi_utils.workbench.cards import Card, Headline, answer_sentence
from epi_utils.workbench.tables import format_interval

HEADLINE_ESTIMATOR = "taylor"
PLANTED_LOSS_TOLERANCE = 1e-4
ARM = ["regime", "schedule"]


def by_unit(frame, column: str = "d", **filters) -> dict[str, float]:
    """``{unit: value}`` of ``column`` over the rows matching ``filters``, averaged over the SFT
    seeds nested within each unit (pretrained model). Raises when the filters leave several rows
    per (unit, seed): a missing filter would otherwise be averaged away silently."""
    sub = frame
    for k, v in filters.items():
        sub = sub[sub[k] == v]
    if sub.duplicated(subset=["unit", "seed"]).any():
        raise ValueError(f"filters {filters} leave several rows per run; add a filter")
    return {u: float(v) for u, v in sub.groupby("unit", sort=False)[column].mean().items()}


def model_means(frame: pd.DataFrame, *, by, columns) -> pd.DataFrame:
    """``frame`` averaged over the SFT seeds within each pretrained model: one row per ``by`` group
    and ``unit``, the mean of each of ``columns``."""
    keys = [*by, "unit"]
    return frame.groupby(keys, sort=False, dropna=False)[list(columns)].mean().reset_index()


def model_table(frame: pd.DataFrame, *, by, columns, unit: str) -> pd.DataFrame:
    """:func:`epi_utils.workbench.stats.interval_table` over pretrained models (seeds averaged first)."""
    return stats.interval_table(model_means(frame, by=by, columns=columns), by=by, columns=columns, unit=unit)


@dataclass(frozen=True)
class ControlOutcome:
    control: str
    regime: str
    schedule: str
    estimator: str
    d: stats.Interval
    passed: bool
    criterion: str

    @property
    def gates_verdict(self) -> bool:
        """Only the headline estimator's controls gate the verdict (the others are reported)."""
        return self.estimator == HEADLINE_ESTIMATOR

    def to_dict(self) -> dict:
        return {"control": self.control, "regime": self.regime, "schedule": self.schedule,
                "estimator": self.estimator, "d": self.d.to_dict(), "passed": self.passed,
                "criterion": self.criterion, "gates_verdict": self.gates_verdict}


@dataclass(frozen=True)
class ArmResult:
    """The headline cell of one arm (regime x schedule), its reliability, and the paired verdicts."""

    regime: str
    schedule: str
    lr: float
    d: stats.Interval
    d_star: stats.Interval               # chance-corrected D(first, last)
    d_at_chance: float                   # what the uncorrected D reads when the overlap is at chance
    d_null: stats.Interval               # the no-drift control's D
    r_first: stats.Interval
    r_last: stats.Interval
    c: stats.Interval
    beyond_noise: stats.Comparison       # D(first, last) - D(no-drift control)
    d_late: stats.Interval               # D(second-to-last, last): drift once training has settled
    late_beyond_noise: stats.Comparison  # D(second-to-last, last) - D(no-drift control)
    functional_s_vs_t: stats.Comparison  # loss increase: last mask - first mask (at the last weights)
    functional_t_vs_random: stats.Comparison
    slope: stats.Interval                # dose-response slope, task "all", over models
    slope_random: stats.Interval         # the same with random masks (control)
    loss_first: float
    loss_last: float

    @property
    def name(self) -> str:
        return f"{self.regime}/{self.schedule}"


def slope_words(iv: stats.Interval) -> str:
    """A slope interval in words: positive / negative / no slope detected."""
    text = f"{format_interval(iv.mean, iv.low, iv.high)} held-out loss per unit of D ({iv.n} {iv.unit})"
    if iv.n < 2 or not np.isfinite(iv.low):
        return f"too few {iv.unit} for a slope interval: {iv.mean:.3g}"
    if iv.low > 0:
        return f"D predicts function (a higher D, a larger extra loss of the current mask): slope {text}"
    if iv.high < 0:
        return f"D predicts function backwards (a higher D, a smaller extra loss): slope {text}"
    return f"D does not predict function (no slope detected): slope {text}"


@dataclass
class Summary:
    config: object
    controls: list[ControlOutcome]
    arms: list[ArmResult]
    dose: pd.DataFrame          # slope table per task (pooled over arms) + pooled row
    dose_arms: pd.DataFrame     # slope table per arm, task "all"
    slope_all: stats.Interval   # task "all", the within-arm slope per model, averaged over arms
    slope_all_random: stats.Interval
    schedule_late: dict         # regime -> Comparison late D constant - cosine
    t: int
    s: int
    t_late: int
    share: float
    dose_share: float
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
            f"{c.control} ({c.regime}/{c.schedule}, {c.estimator}) D = {c.d.mean:.3f} [{c.d.low:.3f}, {c.d.high:.3f}], "
            f"needed {c.criterion}" for c in failed)

    @property
    def main(self) -> ArmResult:
        """The main arm: the SFT-like rate under the first schedule (cosine by default)."""
        return self.arms[0]

    def answer(self) -> str:
        """The study's answer, built from the verdicts (or the refusal)."""
        if self.refusal:
            return self.refusal
        lines = []
        for r in self.arms:
            v = r.beyond_noise.verdict
            what = ("drifts beyond the estimator's own noise" if v is stats.Verdict.A_BETTER else
                    "does not drift beyond the estimator's own noise" if v is stats.Verdict.NO_DIFFERENCE else
                    "drifts LESS than the no-drift control (check the control)" if v is stats.Verdict.B_BETTER else
                    "cannot be judged (not enough pretrained models)")
            f = r.functional_s_vs_t
            fun = ("the current mask hurts more than the start mask when ablated" if f.verdict is stats.Verdict.A_BETTER
                   else "the start mask hurts more than the current mask" if f.verdict is stats.Verdict.B_BETTER
                   else f"no loss difference between the masks (smallest detectable {f.detectable:.3g})"
                   if f.verdict is stats.Verdict.NO_DIFFERENCE else "functional test: not enough models")
            late = r.late_beyond_noise
            small = r.d_late.high <= self.config.null_margin
            late_what = (f"still drifts beyond noise, though by less than the no-drift margin "
                         f"{self.config.null_margin:g}" if late.verdict is stats.Verdict.A_BETTER and small else
                         "still drifts beyond noise" if late.verdict is stats.Verdict.A_BETTER else
                         f"shows no drift beyond noise (smallest detectable {late.detectable:.3g})"
                         if late.verdict is stats.Verdict.NO_DIFFERENCE else "is not distinguishable from the control")
            lines.append(f"{r.regime} (lr {r.lr:g}, {r.schedule}): the top-{self.share:.0%} critical set {what}: "
                         f"D(step {self.t}, step {self.s}) = {_iv(r.d)} ({r.d.label()}), chance-corrected D* = "
                         f"{_iv(r.d_star)}, no-drift control {_iv(r.d_null)}; between the last two checkpoints it "
                         f"{late_what}: D(step {self.t_late}, step {self.s}) = {_iv(r.d_late)}; {fun}; "
                         f"dose-response: {slope_words(r.slope)}.")
        lines.append(f"Within each arm (mean over arms), task 'all': {slope_words(self.slope_all)}; "
                     "random-mask control slope "
                     f"{_iv(self.slope_all_random)}.")
        for regime, cmp in self.schedule_late.items():
            lines.append(f"{regime}: late drift, constant minus cosine schedule: {cmp.sentence()}")
        return "\n".join(lines)

    def card(self) -> Card:
        """Question, the answer in one sentence from the verdicts, five headline numbers, key figure."""
        r = self.main
        if self.refusal:
            answer = self.refusal
        else:
            drift = answer_sentence(r.beyond_noise, a=f"D(step {self.t}, step {self.s})", b="the no-drift control",
                                    metric=f"drift of the top-{self.share:.0%} critical set ({r.regime}, {r.schedule})")
            answer = drift.rstrip(".") + "; within each arm (mean over arms) " + slope_words(self.slope_all) + "."
        heads = [Headline.from_interval(f"drift index D(step {self.t}, step {self.s}), {r.regime} lr, {r.schedule}",
                                        r.d, unit="D (0 no drift)"),
                 Headline.from_interval(f"chance-corrected D*(step {self.t}, step {self.s}), {r.regime} lr, "
                                        f"{r.schedule}", r.d_star, unit="D* (1 at chance)"),
                 Headline.from_interval(f"no-drift control D at step {self.s}, {r.regime} lr, {r.schedule}",
                                        r.d_null, unit="D"),
                 Headline.from_interval("dose-response slope within each arm (mean over arms), task 'all'", self.slope_all,
                                        unit="held-out loss per unit of D")]
        if self.schedule_late:
            regime, cmp = next(iter(self.schedule_late.items()))
            heads.append(Headline.from_interval(f"late drift D(step {self.t_late}, step {self.s}), constant minus "
                                                f"cosine lr, {regime}", cmp.diff, unit="D"))
        else:
            heads.append(Headline.from_interval(f"held-out loss, step-{self.s} mask minus step-{self.t} mask",
                                                r.functional_s_vs_t.diff, unit="nats per token"))
        q = ("Does the set of task-critical parameters drift during SFT beyond the estimator's own noise, "
             "and does that drift predict what ablating the masks does?")
        return Card(q, answer, tuple(heads), figure="dose_response")

    def metrics(self) -> dict:
        """Nested numbers for ``runs.save_metrics``: intervals in the platform's metrics form
        (``name_ci95: [low, high]``, read by the report index) with their unit; verdicts as data."""
        out: dict = {"headline_cell": {"task": "all", "estimator": HEADLINE_ESTIMATOR, "share": self.share,
                                       "t": self.t, "s": self.s, "t_late": self.t_late, "group": "all",
                                       "dose_share": self.dose_share},
                     "unit": self.config.unit, "design": self.config.design,
                     "controls_pass": self.controls_pass, "controls": [c.to_dict() for c in self.controls],
                     "answer": self.answer()}
        for r in self.arms:
            m = {"lr": r.lr, "loss_first": r.loss_first, "loss_last": r.loss_last, "drift_index_at_chance": r.d_at_chance}
            for name, iv in (("drift_index", r.d), ("drift_index_corrected", r.d_star), ("no_drift_control", r.d_null),
                             ("reliability_first", r.r_first), ("reliability_last", r.r_last),
                             ("cross_overlap", r.c), ("drift_index_late", r.d_late), ("dose_slope", r.slope),
                             ("dose_slope_random", r.slope_random)):
                m.update({name: iv.mean, f"{name}_ci95": [iv.low, iv.high], f"{name}_ci_unit": f"{iv.n} {iv.unit}"})
            m["drift_beyond_noise"] = r.beyond_noise.to_dict()
            m["late_drift_beyond_noise"] = r.late_beyond_noise.to_dict()
            m["functional_current_vs_start_mask"] = r.functional_s_vs_t.to_dict()
            m["functional_start_mask_vs_random"] = r.functional_t_vs_random.to_dict()
            out.setdefault(r.regime, {})[r.schedule] = m
        for name, iv in (("dose_slope_all", self.slope_all), ("dose_slope_all_random", self.slope_all_random)):
            out[name] = iv.mean
            out[f"{name}_ci95"] = [iv.low, iv.high]
            out[f"{name}_ci_unit"] = f"{iv.n} {iv.unit}"
        out["schedule_late_constant_minus_cosine"] = {k: v.to_dict() for k, v in self.schedule_late.items()}
        out["dose_by_task"] = self.dose.to_dict(orient="records")
        return out

    def report(self) -> str:
        """The answer, then per arm the training loss and the three paired comparisons as sentences."""
        lines = [self.answer(), ""]
        for r in self.arms:
            lines.append(f"[{r.name}] training loss {r.loss_first:.2f} -> {r.loss_last:.2f}")
            lines += ["  " + c.sentence() for c in (r.beyond_noise, r.functional_s_vs_t, r.functional_t_vs_random)]
        return "\n".join(lines)

    def headline_table(self):
        """The headline numbers per arm: D(first, last) and D* with intervals (``_low``/``_high``), the
        no-drift control, the reliabilities, the late D, the dose slope, and whether the controls pass."""
        rows = []
        for r in self.arms:
            row = {"regime": r.regime, "schedule": r.schedule, "lr": r.lr}
            for name, iv in (("drift_index", r.d), ("drift_index_corrected", r.d_star), ("no_drift_control", r.d_null),
                             ("drift_index_late", r.d_late), ("dose_slope", r.slope)):
                row.update({name: iv.mean, f"{name}_low": iv.low, f"{name}_high": iv.high})
            row.update({"drift_index_at_chance": r.d_at_chance, "reliability_first": r.r_first.mean,
                        "reliability_last": r.r_last.mean, "n": r.d.n, "unit": r.d.unit,
                        "controls_pass": self.controls_pass})
            rows.append(row)
        return pd.DataFrame(rows)

    def headlines(self) -> list[str]:
        names = ["controls_pass", "dose_slope_all"]
        for r in self.arms:
            names += [f"{r.regime}.{r.schedule}.drift_index", f"{r.regime}.{r.schedule}.drift_index_late"]
        return names


def _iv(iv: stats.Interval) -> str:
    if iv.n < 2 or not np.isfinite(iv.low):
        return f"{iv.mean:.3f}"
    return format_interval(iv.mean, iv.low, iv.high)


def _interval(values, unit: str) -> stats.Interval:
    vals = [v for v in values if np.isfinite(v)]
    if len(vals) < 2:
        m = float(np.mean(vals)) if vals else float("nan")
        return stats.Interval(m, float("nan"), float("nan"), len(vals), unit, "t")
    return stats.interval(vals, unit=unit, method="t")


def dose_frame(result) -> pd.DataFrame:
    """One row per run, task and checkpoint t < last: ``dose`` = D(t, last) (taylor, group all, at
    the dose share), ``dose_star`` (chance-corrected), ``extra`` = loss increase of the last mask
    minus that of the step-t mask, ``extra_random`` = last mask minus the random mask beside t."""
    cfg = result.config
    pf, af = result.pair_frame(), result.ablation_frame()
    share = dose_share(cfg)
    last = cfg.checkpoints[-1]
    d = pf[(pf["kind"] == "drift") & (pf["s"] == last) & (pf["estimator"] == HEADLINE_ESTIMATOR)
           & (pf["group"] == "all") & (pf["share"] == share)]
    keys = [*ARM, "pretrain_seed", "seed", "unit", "task"]
    d = d[[*keys, "t", "d", "d_star"]].rename(columns={"d": "dose", "d_star": "dose_star"})
    wide = af.pivot_table(index=[*keys, "t"], columns="mask", values="increase", sort=False).reset_index()
    cur = wide[wide["t"] == last][[*keys, "step"]].rename(columns={"step": "last_mask"})
    out = d.merge(wide, on=[*keys, "t"]).merge(cur, on=keys)
    out["extra"] = out["last_mask"] - out["step"]
    out["extra_random"] = out["last_mask"] - out["random"]
    return out.sort_values([*keys, "t"], ignore_index=True)


def dose_share(cfg) -> float:
    """The share at which D is the dose: ``ablate_share`` when measured, else ``headline_share``."""
    return cfg.ablate_share if cfg.ablate_share in cfg.top_shares else cfg.headline_share


def _slopes(frame: pd.DataFrame, y: str, unit: str) -> stats.Interval:
    """The within-arm dose-response slope over units: per unit (pretrained model) one least-squares
    slope of ``y`` on the dose per arm, averaged over the arms, then the interval over units. A slope
    fitted to every arm's points at once would also carry the differences between arms (an arm with
    more drift and more loss makes a slope with no dose-response inside any arm)."""
    mm = model_means(frame, by=[*ARM, "task", "t"], columns=("dose", y))
    per = dose_response.unit_slopes(mm, x="dose", y=y, within=ARM)
    return _interval(per["slope"].to_numpy(float), unit)


def summarize(result) -> Summary:
    """Controls and verdicts of ``result`` (a :class:`epi_utils.drift.study.Result`; module docstring)."""
    cfg = result.config
    pf, af, rf = result.pair_frame(), result.ablation_frame(), result.run_frame()
    t, s, share = cfg.checkpoints[0], cfg.checkpoints[-1], cfg.headline_share
    t_late = cfg.checkpoints[-2]
    unit = cfg.unit
    cell = dict(task="all", share=share, group="all")
    df = dose_frame(result)
    controls, arms = [], []
    for regime, lr in cfg.regimes:
        for sch in cfg.schedules:
            arm = dict(regime=regime, schedule=sch)
            for est in cfg.estimators:
                nod = by_unit(pf, kind="no_drift", estimator=est, **arm, **cell)
                pla = by_unit(pf, kind="planted", estimator=est, **arm, **cell)
                iv_n, iv_p = _interval(list(nod.values()), unit), _interval(list(pla.values()), unit)
                m = cfg.null_margin
                controls.append(ControlOutcome("no_drift", regime, sch, est, iv_n,
                                               bool(-m <= iv_n.low and iv_n.high <= m), f"interval within [-{m:g}, {m:g}]"))
                runs = rf[(rf["regime"] == regime) & (rf["schedule"] == sch)]
                loss_ok = bool((runs["planted_loss_change"] < PLANTED_LOSS_TOLERANCE).all())
                controls.append(ControlOutcome("planted", regime, sch, est, iv_p,
                                               bool(iv_p.low >= cfg.planted_min_d and loss_ok),
                                               f"interval above {cfg.planted_min_d} and an unchanged loss"))
            head = dict(kind="drift", estimator=HEADLINE_ESTIMATOR, **arm, **cell)
            main = by_unit(pf, t=t, s=s, **head)
            late = by_unit(pf, t=t_late, s=s, **head)
            nod = by_unit(pf, kind="no_drift", estimator=HEADLINE_ESTIMATOR, **arm, **cell)
            col = lambda c, head=head: list(by_unit(pf, c, t=t, s=s, **head).values())  # noqa: E731
            ab = af[(af["regime"] == regime) & (af["schedule"] == sch) & (af["task"] == "all")]
            inc_s = by_unit(ab, "increase", mask="step", t=s)
            inc_t = by_unit(ab, "increase", mask="step", t=t)
            inc_r = by_unit(ab, "increase", mask="random", t=t)
            label = f"D top-{share:.0%} taylor 'all'"
            runs = rf[(rf["regime"] == regime) & (rf["schedule"] == sch)]
            sub = df[(df["regime"] == regime) & (df["schedule"] == sch) & (df["task"] == "all")]
            arms.append(ArmResult(
                regime=regime, schedule=sch, lr=lr,
                d=_interval(list(main.values()), unit), d_star=_interval(col("d_star"), unit),
                d_at_chance=float(np.nanmean(col("d_at_chance"))), d_null=_interval(list(nod.values()), unit),
                r_first=_interval(col("r_t"), unit), r_last=_interval(col("r_s"), unit), c=_interval(col("c_ts"), unit),
                beyond_noise=stats.compare(main, nod, unit=unit, metric=label, a_name=f"D(step {t}, step {s})",
                                           b_name="D(no-drift control)"),
                d_late=_interval(list(late.values()), unit),
                late_beyond_noise=stats.compare(late, nod, unit=unit, metric=label,
                                                a_name=f"D(step {t_late}, step {s})", b_name="D(no-drift control)"),
                functional_s_vs_t=stats.compare(inc_s, inc_t, unit=unit, metric="held-out loss increase",
                                                a_name=f"step-{s} mask", b_name=f"step-{t} mask"),
                functional_t_vs_random=stats.compare(inc_t, inc_r, unit=unit, metric="held-out loss increase",
                                                     a_name=f"step-{t} mask", b_name="random mask"),
                slope=_slopes(sub, "extra", unit), slope_random=_slopes(sub, "extra_random", unit),
                loss_first=float(runs[f"loss_step{t}"].mean()), loss_last=float(runs[f"loss_step{s}"].mean())))
    schedule_late = {}
    if "cosine" in cfg.schedules and "constant" in cfg.schedules:
        for regime, _ in cfg.regimes:
            head = dict(kind="drift", estimator=HEADLINE_ESTIMATOR, regime=regime, t=t_late, s=s, **cell)
            schedule_late[regime] = stats.compare(by_unit(pf, schedule="constant", **head),
                                                  by_unit(pf, schedule="cosine", **head), unit=unit,
                                                  metric=f"late drift D(step {t_late}, step {s})",
                                                  a_name="constant lr", b_name="cosine lr")
    all_task = df[df["task"] == "all"]
    return Summary(config=cfg, controls=controls, arms=arms, dose=dose_table(result, frame=df),
                   dose_arms=dose_arm_table(result, frame=df),
                   slope_all=_slopes(all_task, "extra", unit), slope_all_random=_slopes(all_task, "extra_random", unit),
                   schedule_late=schedule_late, t=t, s=s, t_late=t_late, share=share, dose_share=dose_share(cfg))


def dose_table(result, *, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Dose-response slope per task (each model's slope within each arm, averaged over the arms), and a
    pooled row over the tasks (not ``"all"``; the mean of the per-task, per-arm slopes): mean slope of extra loss on D with its t-interval over models,
    beside the random-mask control's slope and the slope on the chance-corrected D*."""
    cfg = result.config
    df = dose_frame(result) if frame is None else frame
    mm = model_means(df, by=[*ARM, "task", "t"], columns=("dose", "dose_star", "extra", "extra_random"))
    tasks = mm[mm["task"] != "all"]
    tabs = []
    for y, x, name in (("extra", "dose", "slope"), ("extra_random", "dose", "slope_random"),
                       ("extra", "dose_star", "slope_star")):
        per_task = dose_response.slope_table(mm[mm["task"] == "all"], x=x, y=y, unit=cfg.unit, by=["task"],
                                             within=ARM, pooled=False)
        rest = dose_response.slope_table(tasks, x=x, y=y, unit=cfg.unit, by=["task"], within=ARM, pooled=True)
        tab = pd.concat([per_task, rest], ignore_index=True)
        tab = tab.rename(columns={"slope": name, "slope_low": f"{name}_low", "slope_high": f"{name}_high"})
        tabs.append(tab if not tabs else tab.drop(columns=["n", "unit"]))
    out = tabs[0]
    for tab in tabs[1:]:
        out = out.merge(tab, on="task", sort=False)
    return out[[c for c in out.columns if c not in ("n", "unit")] + ["n", "unit"]]


def dose_arm_table(result, *, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Dose-response slope per arm (task ``"all"``), with the random-mask control; over models."""
    cfg = result.config
    df = dose_frame(result) if frame is None else frame
    mm = model_means(df[df["task"] == "all"], by=[*ARM, "t"], columns=("dose", "extra", "extra_random"))
    a = dose_response.slope_table(mm, x="dose", y="extra", unit=cfg.unit, by=ARM, pooled=False)
    b = dose_response.slope_table(mm, x="dose", y="extra_random", unit=cfg.unit, by=ARM, pooled=False)
    b = b.rename(columns={"slope": "slope_random", "slope_low": "slope_random_low", "slope_high": "slope_random_high"})
    return a.drop(columns=["n", "unit"]).merge(b, on=ARM, sort=False)


def dose_points(result) -> pd.DataFrame:
    """Dose and response per arm, checkpoint t and task ``"all"``: means over models with
    t-intervals (the dose-response figure's points)."""
    cfg = result.config
    df = dose_frame(result)
    return model_table(df[df["task"] == "all"], by=[*ARM, "t"], columns=("dose", "dose_star", "extra", "extra_random"),
                       unit=cfg.unit)


def control_table(summary: Summary):
    """Controls as a DataFrame (D with its interval over models, the criterion, pass/fail)."""
    return pd.DataFrame([{"control": c.control, "regime": c.regime, "schedule": c.schedule, "estimator": c.estimator,
                          "d": c.d.mean, "d_low": c.d.low, "d_high": c.d.high, "n": c.d.n, "unit": c.d.unit,
                          "criterion": c.criterion, "passed": c.passed, "gates_verdict": c.gates_verdict}
                         for c in summary.controls])


def schedule_table(summary: Summary):
    """Late drift, constant minus cosine schedule, per regime (paired over models)."""
    rows = []
    for regime, c in summary.schedule_late.items():
        rows.append({"regime": regime, "constant": c.a_mean, "cosine": c.b_mean, "difference": c.diff.mean,
                     "difference_low": c.diff.low, "difference_high": c.diff.high, "p": c.p_value,
                     "verdict": c.verdict.value, "detectable": c.detectable, "n": c.diff.n, "unit": c.diff.unit})
    return pd.DataFrame(rows)


def _first_last(result):
    """Drift pairs D(first, last) of ``result``'s pair frame."""
    cfg = result.config
    pf = result.pair_frame()
    return pf[(pf["kind"] == "drift") & (pf["t"] == cfg.checkpoints[0]) & (pf["s"] == cfg.checkpoints[-1])]


def layer_table(result, *, estimator: str = HEADLINE_ESTIMATOR):
    """D(first, last) per arm and layer type (and ``all``), pseudo-task ``"all"``, headline share:
    D, R_t, R_s, C_ts with t-intervals over pretrained models."""
    cfg = result.config
    pf = _first_last(result)
    cell = pf[(pf["task"] == "all") & (pf["estimator"] == estimator) & (pf["share"] == cfg.headline_share)]
    return model_table(cell, by=[*ARM, "group"], columns=("d", "r_t", "r_s", "c_ts"), unit=cfg.unit)


def task_table(result):
    """D(first, last) and D* per arm, gradient-based estimator and task (and ``"all"``) at the headline
    share, all parameters, with R_t, R_s, C_ts; t-intervals over pretrained models."""
    cfg = result.config
    pf = _first_last(result)
    sub = pf[(pf["group"] == "all") & (pf["share"] == cfg.headline_share) & (pf["estimator"] != "magnitude")]
    return model_table(sub, by=[*ARM, "estimator", "task"], columns=("d", "d_star", "r_t", "r_s", "c_ts"),
                       unit=cfg.unit)


def measure_table(result):
    """The measures of D(first, last) for ``"all"`` at every share: Jaccard's D, D*, the chance
    level, RBO's D and Spearman's rho within and across checkpoints; t-intervals over models."""
    cfg = result.config
    pf = _first_last(result)
    sub = pf[(pf["group"] == "all") & (pf["task"] == "all")]
    return model_table(sub, by=[*ARM, "estimator", "share"],
                       columns=("d", "d_star", "chance", "rbo_d", "rho_r_t", "rho_r_s", "rho_ts"), unit=cfg.unit)


def functional_table(result):
    """Held-out loss increase at the last weights per arm and task for the first checkpoint's mask,
    the last one's and a random mask, over models, plus the paired comparison last - first mask
    per task (verdict and smallest detectable effect)."""
    cfg = result.config
    af = result.ablation_frame()
    t, s = cfg.checkpoints[0], cfg.checkpoints[-1]
    keys = [*ARM, "task", "pretrain_seed", "seed", "unit"]
    first = af[(af["t"] == t)].pivot_table(index=keys, columns="mask", values="increase", sort=False).reset_index()
    first = first.rename(columns={"step": "first_mask"})
    lastm = af[(af["t"] == s) & (af["mask"] == "step")][[*keys, "increase"]].rename(columns={"increase": "last_mask"})
    wide = first.merge(lastm, on=keys)
    tab = model_table(wide, by=[*ARM, "task"], columns=("first_mask", "last_mask", "random"), unit=cfg.unit)
    verdicts = []
    for (regime, sch, task), sub in wide.groupby([*ARM, "task"], sort=False):
        cmp = stats.compare(by_unit(sub, "last_mask"), by_unit(sub, "first_mask"), unit=cfg.unit, metric="loss increase")
        verdicts.append({"regime": regime, "schedule": sch, "task": task, "last_minus_first": cmp.diff.mean,
                         "last_minus_first_low": cmp.diff.low, "last_minus_first_high": cmp.diff.high,
                         "verdict": cmp.verdict.value, "detectable": cmp.detectable})
    return tab.merge(pd.DataFrame(verdicts), on=[*ARM, "task"]).sort_values([*ARM, "task"], ignore_index=True)
