"""Leave-settings-out evaluation of the diagnosis and the study's learned diagnosis (issue 28).

The worlds of the default design are the *fitting* settings: the cascade's cuts were chosen on
them and the learned diagnosis (a random forest on the signals, :func:`fit_forest`) is fitted on
their unlearned samples and validation labels. The worlds of the settings family
(:mod:`epi_utils.ilp.settings`) are *held out*: nothing is fitted or tuned on them; every method
diagnoses their unlearned samples and is scored against their truth, per setting and pooled.

**The forest is the study's diagnosis** (``Config.diagnoser = "forest"``; it held out better than
the cascade in run 20261207-005151-cpu-58f0: 0.964 vs 0.847). :func:`forest_predictions` fits it
*only on worlds other than the one it diagnoses*: a world of the default design is diagnosed by a
forest fitted on the other worlds of the default design (leave-one-world-out), a held-out setting
by a forest fitted on the default design's worlds only. Its labels are the other worlds' planted
(and measured) truth: that is the training data of a classifier, as a user would label a few
worlds to train it; the diagnosed world's own truth is never read (``tests/test_ilp_leak.py``
scrambles it). :func:`apply_diagnosis` writes the chosen diagnosis into each world's table and
keeps the cascade beside it (``cascade``, ``cascade_evidence``) as the interpretable baseline; a
world with no forest to fit (a single world, or one class in the other worlds) falls back to the
cascade and says so in ``diagnosed_by``.

Methods (:data:`METHODS`): the forest, the adaptive cascade, the cascade with the fixed cuts, and
the two baselines of :mod:`epi_utils.ilp.baselines` (cascade without the probe, no-model rules).
On the fitting worlds the forest is scored by leave-one-world-out, so no number is in-sample.
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

METHODS = ("forest", "cascade", "cascade_fixed_cuts", "cascade_without_probe", "rules_baseline")
METHOD_NAMES = {"cascade": "rule cascade (adaptive cuts)", "cascade_fixed_cuts": "rule cascade (fixed cuts)",
                "forest": "random forest (the study's diagnosis; fitted on other worlds only)",
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


def forest_predictions(fit: Sequence[SeedRecord], held: Sequence[SeedRecord], *, seed: int = 0,
                       trees: int = 200, only: Sequence[SeedRecord] | None = None
                       ) -> dict[int, tuple[pd.Series | None, list[str], int]]:
    """The forest's diagnosis of every world's unlearned rows, fitted only on *other* worlds: a
    world of ``fit`` (the default design) by a forest fitted on the other worlds of ``fit``
    (leave-one-world-out), a world of ``held`` by a forest fitted on all of ``fit``. Keyed by
    ``id(record)``: ``(predictions or None when no forest could be fitted, the names of the worlds
    it was fitted on, their unlearned rows)``. The diagnosed world's ``truth`` is never read.
    ``only``: the worlds (of ``fit`` or ``held``) to diagnose, default all; a forest is fitted only
    when a world needs it (each forest is a function of its fitting worlds and ``seed``, so a world
    gets the same diagnosis whichever others are diagnosed with it)."""
    fit_ok = [r for r in fit if len(_unlearned(r.table))]
    full: list = []   # the forest on all of fit_ok, fitted when first needed
    out = {}
    for r in ([*fit, *held] if only is None else only):
        unl = _unlearned(r.table)
        if not len(unl):
            continue
        others = [o for o in fit_ok if o is not r]
        if len(others) == len(fit_ok):
            if not full:
                full.append(fit_forest([o.table for o in fit_ok], seed=seed, trees=trees) if fit_ok else (None, []))
            model = full[0]
        else:
            model = fit_forest([o.table for o in others], seed=seed, trees=trees)
        names = [f"{o.setting}/{o.seed}" if o.setting == "default" else o.setting for o in others]
        n_rows = sum(len(_unlearned(o.table)) for o in others)
        out[id(r)] = (predict_forest(*model, unl) if model[0] is not None else None, names, n_rows)
    return out


def apply_diagnosis(fit: Sequence[SeedRecord], held: Sequence[SeedRecord], *, method: str = "forest",
                    seed: int = 0, trees: int = 200, only: Sequence[SeedRecord] | None = None) -> dict:
    """Write the study's diagnosis into every world's table (in place): ``cascade`` /
    ``cascade_evidence`` (the rule cascade, computed per world by the study), ``forest`` (the
    forest of :func:`forest_predictions`), ``diagnosis`` / ``evidence`` (the ``method`` chosen;
    the cascade where no forest could be fitted) and ``diagnosed_by``. ``only``: the worlds whose
    tables are written (default all of ``fit`` and ``held``; the study diagnoses its default design
    first, to start the mitigations, and the held-out settings when they are done). Returns the
    forests' predictions (:func:`forest_predictions`; empty for the cascade), which
    :func:`evaluate` reuses."""
    if method not in ("forest", "cascade"):
        raise ValueError(f"apply_diagnosis: method must be 'forest' or 'cascade', got {method!r}")
    preds = forest_predictions(fit, held, seed=seed, trees=trees, only=only) if method == "forest" else {}
    for r in ([*fit, *held] if only is None else only):
        t = r.table
        if "cascade" not in t.columns:
            t["cascade"], t["cascade_evidence"] = t["diagnosis"], t["evidence"]
        pred, names, n_fit = preds.get(id(r), (None, [], 0))
        t["forest"] = pred.reindex(t.index) if pred is not None else None
        unl = ~t["learned"].astype(bool)
        if pred is None:
            why = "cascade" if method == "cascade" else "cascade (no forest: too few other worlds or causes to fit on)"
            t["diagnosis"], t["evidence"] = t["cascade"], t["cascade_evidence"]
            t["diagnosed_by"] = np.where(unl, why, None)
            continue
        text = (f"random forest on the signals, fitted on {n_fit} unlearned samples of {len(names)} other "
                f"world(s) ({', '.join(names)}) and their labels; the rule cascade says ")
        t["diagnosis"] = t["forest"].where(unl, None)
        t["evidence"] = [text + f"{c}: {e}" if u else None
                         for u, c, e in zip(unl, t["cascade"], t["cascade_evidence"])]
        t["diagnosed_by"] = np.where(unl, "forest", None)
    return preds


def method_diagnoses(table: pd.DataFrame, *, forest, thresholds: dg.CascadeThresholds) -> dict[str, pd.Series]:
    """Every method's diagnosis of the unlearned rows of ``table``; ``forest``: ``(model,
    columns)`` or the forest's predictions (a Series, :func:`forest_predictions`)."""
    unl = _unlearned(table)
    fixed = dg.CascadeThresholds(rare_max_ratio=thresholds.rare_max_ratio,
                                 complex_min_len_z=thresholds.complex_min_len_z, robust_z=False)
    cascade = unl["cascade"] if "cascade" in unl.columns else unl["diagnosis"]
    if isinstance(forest, pd.Series):
        forest_diag = forest.reindex(unl.index).rename("forest")
    else:
        forest_diag = predict_forest(*(forest if forest is not None else (None, [])), unl)
    return {"forest": forest_diag.astype(str),
            "cascade": cascade.astype(str),
            "cascade_fixed_cuts": dg.diagnose(unl, thresholds=fixed, only_unlearned=False)["diagnosis"],
            "cascade_without_probe": baselines.cascade_without_probe(unl, thresholds=thresholds),
            "rules_baseline": baselines.rules_baseline(unl)}


def _scores(truth: pd.Series, diag: pd.Series) -> dict:
    per = dg.per_cause_scores(dg.confusion(truth, diag))
    out = {"macro_f1": float(np.nanmean(per.loc[list(CAUSES), "f1"])),
           "macro_f1_inferred": float(np.nanmean(per.loc[list(INFERRED), "f1"]))}
    out.update({f"f1_{c}": float(per.loc[c, "f1"]) for c in CAUSES})
    return out


def evaluate(fit: Sequence[SeedRecord], held: Sequence[SeedRecord], *, thresholds: dg.CascadeThresholds,
             seed: int = 0, trees: int = 200, forests: dict | None = None) -> pd.DataFrame:
    """One row per world and method: ``part`` (``"fitting"`` / ``"held out"``), ``setting``,
    ``seed``, ``unit`` (``setting`` for held-out worlds, ``default/<seed>`` for fitting ones),
    ``method``, ``macro_f1``, ``macro_f1_inferred`` and ``f1_<cause>``. Fitting worlds: the forest
    by leave-one-world-out; held-out worlds: the forest fitted on all fitting worlds
    (:func:`forest_predictions`; a world with no forest to fit scores it as all ``unexplained``).
    ``forests``: those predictions as :func:`apply_diagnosis` returned them for these worlds, the
    same ``seed`` and ``trees`` (the study's run; they are fitted again when a world is missing)."""
    fit = [r for r in fit if len(_unlearned(r.table))]
    held = [r for r in held if len(_unlearned(r.table))]
    rows = []
    preds = forests if forests and all(id(r) in forests for r in [*fit, *held]) else \
        forest_predictions(fit, held, seed=seed, trees=trees)
    for part, recs in (("fitting", fit), ("held out", held)):
        for r in recs:
            forest = preds[id(r)][0]
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
