"""Leave-settings-out evaluation of the diagnosis (issue 28).

The worlds of the default design are the *fitting* settings: the cascade's cuts were chosen on
them and the learned diagnosis (a random forest on the signals, :func:`fit_forest`) is fitted on
their unlearned samples and truth labels. The worlds of the settings family
(:mod:`epi_utils.ilp.settings`) are *held out*: nothing is fitted or tuned on them; every method
diagnoses their unlearned samples and is scored against their truth, per setting and pooled.

Methods (:data:`METHODS`): the adaptive cascade (the study's ``diagnosis`` column), the cascade
with the fixed cuts, the random forest, and the two baselines of :mod:`epi_utils.ilp.baselines`
(cascade without the probe, no-model rules). On the fitting worlds the forest is scored by
leave-one-world-out (each world diagnosed by a forest fitted on the others), so neither number
is in-sample.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import baselines
from epi_utils.ilp import diagnosis as dg
from epi_utils.ilp.diagnosis import CAUSES, NO_CAUSE, UNEXPLAINED
from epi_utils.ilp.records import INFERRED, SeedRecord
from epi_utils.workbench import stats

METHODS = ("cascade", "cascade_fixed_cuts", "forest", "cascade_without_probe", "rules_baseline")
METHOD_NAMES = {"cascade": "rule cascade (adaptive cuts)", "cascade_fixed_cuts": "rule cascade (fixed cuts)",
                "forest": "random forest (fitted on the default design)",
                "cascade_without_probe": "cascade without the knowledge probe",
                "rules_baseline": "no-model rules (duplicates, stage, task)"}


def _unlearned(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["learned"].astype(bool)]


def fit_forest(tables: Sequence[pd.DataFrame], *, seed: int = 0, trees: int = 200):
    """A random forest (``trees`` trees, balanced classes) fitted on the unlearned rows of ``tables``
    against their ``truth``; returns ``(model, feature columns)`` (None when there is one class, or no
    table to fit on)."""
    from sklearn.ensemble import RandomForestClassifier

    if not tables:  # leave-one-world-out with a single fitting world (e.g. a rehearsal): nothing to fit on
        return None, []
    rows = pd.concat([_unlearned(t) for t in tables])
    x = dg.feature_matrix(rows)
    y = rows["truth"].astype(str).to_numpy()
    if len(np.unique(y)) < 2:
        return None, list(x.columns)
    clf = RandomForestClassifier(n_estimators=trees, random_state=seed, class_weight="balanced")
    clf.fit(x.to_numpy(), y)
    return clf, list(x.columns)


def predict_forest(model, columns: list[str], table: pd.DataFrame) -> pd.Series:
    """The forest's cause for every row of ``table`` (``"none"`` -> ``"unexplained"``)."""
    x = dg.feature_matrix(table).reindex(columns=columns, fill_value=0.0)
    pred = model.predict(x.to_numpy()) if model is not None else np.full(len(table), UNEXPLAINED, dtype=object)
    pred = np.where(pred == NO_CAUSE, UNEXPLAINED, pred)
    return pd.Series(pred, index=table.index, name="forest")


def method_diagnoses(table: pd.DataFrame, *, forest, thresholds: dg.CascadeThresholds) -> dict[str, pd.Series]:
    """Every method's diagnosis of the unlearned rows of ``table``."""
    unl = _unlearned(table)
    fixed = dg.CascadeThresholds(rare_max_ratio=thresholds.rare_max_ratio,
                                 complex_min_len_z=thresholds.complex_min_len_z, robust_z=False)
    return {"cascade": unl["diagnosis"].astype(str),
            "cascade_fixed_cuts": dg.diagnose(unl, thresholds=fixed, only_unlearned=False)["diagnosis"],
            "forest": predict_forest(*forest, unl),
            "cascade_without_probe": baselines.cascade_without_probe(unl, thresholds=thresholds),
            "rules_baseline": baselines.rules_baseline(unl)}


def _scores(truth: pd.Series, diag: pd.Series) -> dict:
    per = dg.per_cause_scores(dg.confusion(truth, diag))
    out = {"macro_f1": float(np.nanmean(per.loc[list(CAUSES), "f1"])),
           "macro_f1_inferred": float(np.nanmean(per.loc[list(INFERRED), "f1"]))}
    out.update({f"f1_{c}": float(per.loc[c, "f1"]) for c in CAUSES})
    return out


def evaluate(fit: Sequence[SeedRecord], held: Sequence[SeedRecord], *, thresholds: dg.CascadeThresholds,
             seed: int = 0, trees: int = 200) -> pd.DataFrame:
    """One row per world and method: ``part`` (``"fitting"`` / ``"held out"``), ``setting``,
    ``seed``, ``unit`` (``setting`` for held-out worlds, ``default/<seed>`` for fitting ones),
    ``method``, ``macro_f1``, ``macro_f1_inferred`` and ``f1_<cause>``. Fitting worlds: the forest
    by leave-one-world-out; held-out worlds: the forest fitted on all fitting worlds."""
    fit = [r for r in fit if len(_unlearned(r.table))]
    rows = []
    full = fit_forest([r.table for r in fit], seed=seed, trees=trees) if fit else (None, [])
    for part, recs in (("fitting", fit), ("held out", [r for r in held if len(_unlearned(r.table))])):
        for r in recs:
            forest = full if part == "held out" else fit_forest([o.table for o in fit if o is not r], seed=seed,
                                                                trees=trees)
            truth = _unlearned(r.table)["truth"].astype(str)
            for method, diag in method_diagnoses(r.table, forest=forest, thresholds=thresholds).items():
                rows.append({"part": part, "setting": r.setting, "setting_text": r.setting_text, "seed": r.seed,
                             "unit": f"{r.setting}" if part == "held out" else f"default/{r.seed}",
                             "method": method, "n_unlearned": int(len(truth)), **_scores(truth, diag)})
    return pd.DataFrame(rows)


def pooled_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per part and method: mean macro-F1 (all causes, inferred causes) with intervals over the
    part's worlds kept inside [0, 1] (logit-t), and each method's paired difference to the cascade (``diff*``, same worlds)."""
    if scores.empty:
        return pd.DataFrame()
    parts = []
    for part, g in scores.groupby("part", sort=False):
        t = stats.interval_table(g, by=["method"], columns=["macro_f1", "macro_f1_inferred"],
                                 unit="settings" if part == "held out" else "worlds", unit_column="unit",
                                 bounds=(0.0, 1.0))
        t.insert(0, "part", part)
        casc = dict(zip(g.loc[g["method"] == "cascade", "unit"], g.loc[g["method"] == "cascade", "macro_f1"]))
        diffs = []
        for m in t["method"]:
            other = dict(zip(g.loc[g["method"] == m, "unit"], g.loc[g["method"] == m, "macro_f1"]))
            if m == "cascade" or len(other) < 2:
                diffs.append((np.nan, np.nan, np.nan, np.nan))
                continue
            cmp = stats.compare(other, casc, unit="settings", metric="macro-F1", a_name=m, b_name="cascade")
            diffs.append((cmp.diff.mean, cmp.diff.low, cmp.diff.high, cmp.p_value))
        t[["diff_vs_cascade", "diff_vs_cascade_low", "diff_vs_cascade_high", "p_vs_cascade"]] = diffs
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def better_method(scores: pd.DataFrame, *, a: str = "forest", b: str = "cascade") -> stats.Comparison | None:
    """``a`` vs ``b`` macro-F1 on the held-out settings, paired (None with fewer than 2 settings)."""
    g = scores[scores["part"] == "held out"]
    x = dict(zip(g.loc[g["method"] == a, "unit"], g.loc[g["method"] == a, "macro_f1"]))
    y = dict(zip(g.loc[g["method"] == b, "unit"], g.loc[g["method"] == b, "macro_f1"]))
    if len(set(x) & set(y)) < 2:
        return None
    return stats.compare(x, y, unit="settings", metric="held-out macro-F1", a_name=METHOD_NAMES[a],
                         b_name=METHOD_NAMES[b])
