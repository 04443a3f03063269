"""Summaries of a study run over seeds (each seed = a different world and a different tiny-model
pretraining, so intervals are over ``worlds``): manifestation, per-cause diagnosis scores, the
"none of the five" bucket, mitigation comparisons, and the ``metrics.json`` entries.

Verdicts are data: mitigation comparisons are :class:`epi_utils.workbench.stats.Comparison`
objects (paired over worlds); no sentence here decides anything the numbers do not.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import diagnosis as dg
from epi_utils.ilp.diagnosis import CAUSES, NO_CAUSE, UNEXPLAINED
from epi_utils.ilp.records import CLOSE_TO_RULE, INFERRED, RecoveryRecord, SeedRecord
from epi_utils.workbench import stats

UNIT = "worlds"   # one seed = one world + one pretraining of the base model
#: columns of :func:`~epi_utils.workbench.stats.interval_table` that are bookkeeping, not numbers of a cause
_BOOKKEEPING = ("group", "n", "unit")


def _unlearned(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["learned"].astype(bool)]


def _interval(values, *, unit: str = UNIT, bounds: tuple[float, float] | None = (0.0, 1.0)) -> stats.Interval | None:
    """Interval over worlds of a score in [0, 1] (F1, accuracy: kept inside the bounds, logit-t);
    None with fewer than 2 finite values."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return stats.interval(vals, unit=unit, bounds=bounds) if len(vals) >= 2 else None


# --------------------------------------------------------------------------- tables over worlds
def pooled_table(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """All seeds' per-sample tables stacked, with a ``seed`` column."""
    if not records:
        raise ValueError("pooled_table: no seed records")
    return pd.concat([r.table.assign(seed=r.seed) for r in records])


def convergence_table(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """Per seed and stage: steps, epochs, share of clean samples learned, converged."""
    return pd.DataFrame([{"seed": r.seed, **dataclasses.asdict(s)} for r in records for s in r.stages])


def timing_table(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """Seconds per phase and world (``default/<seed>`` or the held-out setting's name)."""
    names = [f"default/{r.seed}" if r.setting == "default" else f"{r.setting} (world seed {r.seed})" for r in records]
    return pd.DataFrame(dict(zip(names, [r.timings for r in records]))).T.rename_axis("world").round(1)


def world_summary(world) -> pd.DataFrame:
    """Train samples per stage, task and planted cause (``none`` = not planted)."""
    frame = pd.DataFrame([{"task": s.task, "split": s.split, "stage": s.stage,
                           "cause": s.planted_cause or "none"} for s in world.samples])
    return pd.crosstab([frame["stage"], frame["task"]], [frame["split"], frame["cause"]])


def seed_line(rec: SeedRecord) -> str:
    """One line about a finished world: unlearned samples, stage lengths, convergence, seconds."""
    unl = int((~rec.table["learned"]).sum())
    stages = ", ".join(f"stage {r.stage} {r.epochs:.1f} epochs ({'converged' if r.converged else 'NOT converged'})"
                       for r in rec.stages)
    return f"world {rec.seed}: {unl} of {len(rec.table)} training samples unlearned; {stages}; {sum(rec.timings.values()):.0f} s"


def run_lines(records: Sequence[SeedRecord], *, estimate=None) -> str:
    """One line per world (:func:`seed_line`) and, for a rehearsal, what ran and the full-scale estimate."""
    lines = [seed_line(r) for r in records]
    if estimate is not None:
        lines = ["GPU rehearsal: a toy-scale run of the profile's code path on the CPU (the tables below are "
                 "the toy run's)", *lines, estimate.summary() if hasattr(estimate, "summary") else str(estimate)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- manifestation
def manifestation(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """Per truth cause (and ``none``): unlearned samples per world (mean, min, max) and the share
    of the unlearned samples it makes up (``prevalence``, with its interval over worlds, kept inside
    [0, 1]: logit-t, or Wilson where every world has the same share)."""
    rows = []
    for c in (*CAUSES, NO_CAUSE):
        for r in records:
            unl = _unlearned(r.table)
            n = int((unl["truth"] == c).sum())
            rows.append({"cause": c, "seed": r.seed, "unlearned": n, "prevalence": n / max(1, len(unl))})
    long = pd.DataFrame(rows)
    counts = long.groupby("cause", sort=False)["unlearned"].agg(unlearned_mean="mean", unlearned_min="min",
                                                                 unlearned_max="max")
    counts["unlearned_mean"] = counts["unlearned_mean"].astype(float)
    ivs = stats.interval_table(long, by=["cause"], columns=["prevalence"], unit=UNIT, unit_column="seed",
                               method="auto", bounds=(0.0, 1.0)).set_index("cause")   # a share: never below 0
    return counts.join(ivs)


def learned_share_by_group(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """Share of training samples reproduced after SFT per task and planted cause, mean over worlds."""
    pooled = pooled_table(records)
    pooled = pooled.assign(planted=pooled["planted_cause"].fillna(NO_CAUSE))
    return (pooled.groupby(["seed", "task", "planted"])["learned"].mean().groupby(["task", "planted"]).mean()
            .unstack("planted").round(3))


# --------------------------------------------------------------------------- diagnosis scores
@dataclass
class DiagnosisSummary:
    confusion: pd.DataFrame           # truth x diagnosis, unlearned samples pooled over worlds
    per_cause: pd.DataFrame           # per cause: precision/recall/F1 with intervals over worlds, support
    macro_f1: stats.Interval | None   # macro-F1 over the five causes, one value per world
    macro_f1_close: stats.Interval | None
    macro_f1_inferred: stats.Interval | None
    macro_f1_per_world: list[float]
    none_bucket: pd.DataFrame         # per world: unlearned with no truth cause, diagnosed unexplained


def _scores_one(table: pd.DataFrame) -> pd.DataFrame:
    u = _unlearned(table)
    return dg.per_cause_scores(dg.confusion(u["truth"], u["diagnosis"]))


def diagnosis_summary(records: Sequence[SeedRecord]) -> DiagnosisSummary:
    """Per-cause P/R/F1 computed per world and summarised with intervals over worlds kept inside
    [0, 1] (logit-t; issue 28: a plain t reached 1.06 for F1 near 1); macro-F1
    per world over the five causes and over the two groups (:data:`CLOSE_TO_RULE`, :data:`INFERRED`)."""
    per_world = {r.seed: _scores_one(r.table) for r in records if len(_unlearned(r.table))}
    if not per_world:
        raise dg.DiagnosisInputError("no unlearned samples in any world: nothing to diagnose")
    long = pd.DataFrame([{"cause": c, "seed": seed, **{m: float(s.loc[c, m]) for m in ("support", "precision", "recall", "f1")}}
                         for seed, s in per_world.items() for c in CAUSES])
    per_cause = stats.interval_table(long, by=["cause"], columns=["precision", "recall", "f1"], unit=UNIT,
                                     unit_column="seed", method="auto", bounds=(0.0, 1.0)).set_index("cause")
    per_cause.insert(0, "support_per_world", long.groupby("cause", sort=False)["support"].mean().astype(float))
    per_cause.insert(0, "group", ["close to rule" if c in CLOSE_TO_RULE else "inferred" for c in per_cause.index])

    def macro(causes) -> list[float]:
        return [float(np.nanmean(s.loc[list(causes), "f1"])) for s in per_world.values()]

    u = _unlearned(pooled_table(records))
    none = pd.DataFrame([{"seed": r.seed, "unlearned": int(len(_unlearned(r.table))),
                          "truth_none": int((_unlearned(r.table)["truth"] == NO_CAUSE).sum()),
                          "diagnosed_unexplained": int((_unlearned(r.table)["diagnosis"] == UNEXPLAINED).sum())}
                         for r in records]).set_index("seed")
    m_all = macro(CAUSES)
    return DiagnosisSummary(confusion=dg.confusion(u["truth"], u["diagnosis"]),
                            per_cause=per_cause, macro_f1=_interval(m_all),
                            macro_f1_close=_interval(macro(CLOSE_TO_RULE)),
                            macro_f1_inferred=_interval(macro(INFERRED)), macro_f1_per_world=m_all, none_bucket=none)


# --------------------------------------------------------------------------- mitigation
def recovery_frame(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """All mitigation arms of all worlds, one row each."""
    return pd.DataFrame([dataclasses.asdict(x) for r in records for x in r.recovery],
                        columns=[f.name for f in dataclasses.fields(RecoveryRecord)])


def mitigation_comparisons(records: Sequence[SeedRecord], *, against: str = "control") -> dict[str, stats.Comparison]:
    """Per cause: recovery rate of the targeted fix vs the ``against`` arm (``"control"``: uniform
    rows; ``"focused"``: the same diagnosed samples without the cause-specific change), paired over
    worlds (:func:`epi_utils.workbench.stats.compare`). Causes without that arm are left out."""
    frame = recovery_frame(records)
    out = {}
    if frame.empty:
        return out
    name = {"control": "uniform control", "focused": "focused control"}[against]
    for cause, g in frame.groupby("cause", sort=False):
        fix = dict(zip(g.loc[g["arm"] == "fix", "seed"], g.loc[g["arm"] == "fix", "recovery_rate"]))
        ctl = dict(zip(g.loc[g["arm"] == against, "seed"], g.loc[g["arm"] == against, "recovery_rate"]))
        if len(set(fix) & set(ctl)) < 2:
            continue
        out[cause] = stats.compare(fix, ctl, unit=UNIT, paired=True, metric=f"recovery rate ({cause})",
                                   a_name="targeted fix", b_name=name)
    return out


def mitigation_table(comparisons: dict[str, stats.Comparison],
                     focused: dict[str, stats.Comparison] | None = None) -> pd.DataFrame:
    """One row per cause: fix and uniform-control means, difference with its interval, p, verdict,
    detectable; with ``focused`` also the focused control's mean and the fix's difference to it."""
    if not comparisons:  # mitigation off (e.g. a rehearsal): the table's columns, no rows
        columns = ["fix", "control", "diff", "diff_low", "diff_high", "n_worlds", "p_value", "verdict", "detectable"]
        if focused is not None:
            columns += ["focused", "diff_focused", "diff_focused_low", "diff_focused_high", "p_focused", "verdict_focused"]
        return pd.DataFrame(columns=columns, index=pd.Index([], name="cause"))
    rows = []
    for c, cmp in comparisons.items():
        row = {"cause": c, "fix": cmp.a_mean, "control": cmp.b_mean, "diff": cmp.diff.mean,
               "diff_low": cmp.diff.low, "diff_high": cmp.diff.high, "n_worlds": cmp.diff.n,
               "p_value": cmp.p_value, "verdict": cmp.verdict.value, "detectable": cmp.detectable}
        if focused is not None:
            f = focused.get(c)
            row.update({"focused": f.b_mean if f else np.nan,
                        "diff_focused": f.diff.mean if f else np.nan,
                        "diff_focused_low": f.diff.low if f else np.nan,
                        "diff_focused_high": f.diff.high if f else np.nan,
                        "p_focused": f.p_value if f else np.nan,
                        "verdict_focused": f.verdict.value if f else "no focused arm (the fix is focused training)"})
        rows.append(row)
    return pd.DataFrame(rows).set_index("cause")


# --------------------------------------------------------------------------- metrics.json
def mitigation_sentences(comparisons: dict[str, stats.Comparison]) -> str:
    """One sentence per cause (:meth:`~epi_utils.workbench.stats.Comparison.sentence`), or why there is none."""
    if not comparisons:
        return "No mitigation results (mitigate is off, or no world had a diagnosed sample)."
    return "\n".join(cmp.sentence() for cmp in comparisons.values())


def _iv(iv: stats.Interval | None) -> dict:
    return iv.to_dict() if iv is not None else {}


def headline_metrics(records: Sequence[SeedRecord], diag: DiagnosisSummary, manif: pd.DataFrame,
                     comparisons: dict[str, stats.Comparison]) -> tuple[dict, list[str]]:
    """``(metrics, headline names)`` for :func:`epi_utils.workbench.runs.save_metrics`."""
    conv = [s.converged for r in records for s in r.stages]
    metrics = {
        "n_worlds": len(records),
        "diagnosis": {"macro_f1": _iv(diag.macro_f1), "macro_f1_close_to_rule": _iv(diag.macro_f1_close),
                      "macro_f1_inferred": _iv(diag.macro_f1_inferred),
                      "macro_f1_per_world": diag.macro_f1_per_world,
                      "per_cause": {c: {k: float(v) for k, v in row.items() if k not in _BOOKKEEPING}
                                    for c, row in diag.per_cause.iterrows()},
                      "confusion": diag.confusion.to_dict()},
        "manifestation": {c: {k: float(v) for k, v in row.items() if k not in _BOOKKEEPING}
                          for c, row in manif.iterrows()},
        "min_unlearned_per_cause_per_world": int(manif.loc[list(CAUSES), "unlearned_min"].min()),
        "none_bucket": {"truth_none_mean": float(diag.none_bucket["truth_none"].mean()),
                        "diagnosed_unexplained_mean": float(diag.none_bucket["diagnosed_unexplained"].mean()),
                        "unlearned_mean": float(diag.none_bucket["unlearned"].mean())},
        "convergence": {"stages_converged_share": float(np.mean(conv)) if conv else float("nan")},
        "heldout_accuracy": _iv(_interval([r.heldout_accuracy for r in records])),
        "mitigation": {c: cmp.to_dict() for c, cmp in comparisons.items()},
    }
    heads = ["n_worlds", "min_unlearned_per_cause_per_world", "convergence.stages_converged_share"]
    if diag.macro_f1 is not None:
        heads += ["diagnosis.macro_f1.mean", "diagnosis.macro_f1.low", "diagnosis.macro_f1.high"]
    if diag.macro_f1_inferred is not None:
        heads += ["diagnosis.macro_f1_inferred.mean"]
    return metrics, heads


def heldout_metrics(scores: pd.DataFrame) -> dict:
    """Macro-F1 per part (fitting / held out) and method, with intervals over worlds / settings,
    and per held-out setting (the ``metrics.json`` entry ``heldout``)."""
    out: dict = {}
    if scores.empty:
        return out
    for (part, method), g in scores.groupby(["part", "method"], sort=False):
        key = "heldout" if part == "held out" else "fitting"
        vals = g["macro_f1"].dropna().tolist()
        inf = g["macro_f1_inferred"].dropna().tolist()
        out.setdefault(key, {})[method] = {
            "macro_f1": _iv(_interval(vals, unit="settings" if key == "heldout" else UNIT)),
            "macro_f1_inferred": _iv(_interval(inf, unit="settings" if key == "heldout" else UNIT)),
            "per_unit": dict(zip(g["unit"], [float(v) for v in g["macro_f1"]]))}
    return out


def diagnosis_sentence(diag: DiagnosisSummary) -> str:
    """The macro-F1 numbers as one sentence (no judgement beyond the numbers)."""
    parts = []
    for name, iv in (("all five causes", diag.macro_f1), ("causes close to their planting rule", diag.macro_f1_close),
                     ("inferred causes", diag.macro_f1_inferred)):
        if iv is not None:
            parts.append(f"{name}: {iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]")
    label = diag.macro_f1.label() if diag.macro_f1 is not None else "fewer than 2 worlds, no interval"
    return "Diagnosis macro-F1 (" + label + "): " + "; ".join(parts) + "."
