"""Diagnosis of unlearned samples: a transparent rule cascade, a learned variant, validation.

The five causes follow the ILP study ("Why Supervised Fine-Tuning Fails to Learn", 2026):
missing prerequisite knowledge, conflict with pre-training knowledge, internal inconsistency of
the SFT data, left-side forgetting in sequential fine-tuning, insufficient optimisation of rare or
complex patterns. Each unlearned sample is mapped to one of them or to ``unexplained``.

The cascade reads the per-sample table of :func:`epi_utils.ilp.signals.signal_table` (signals a
user has: the SFT data, the base model, the training dynamics; no generator field) and checks, in
this order (the first rule that fires decides, and its evidence is recorded):

1. ``inconsistency``: the prompt (or a near-identical one) appears elsewhere in the same stage
   and task with a different target (``incons_flag``).
2. ``forgetting`` (data): the prompt is retrained with another target in a later stage
   (``overwrite_later``, when ``overwrite_is_forgetting``).
3. ``conflict``: the base model answers the prompt with something else, as confidently as it
   answers the prompts it knows (``probe_category == "conflict"``).
4. ``missing_knowledge``: the base model answers something else with less confidence
   (``probe_category == "unknown"``), in a prompt form where it demonstrably knows others.
5. ``forgetting`` (dynamics, when ``dynamics_forgetting``): reproduced at the end of its own
   stage and no longer at the end of training (``dyn_stage_forgotten``).
6. ``rare_complex``: the prompt's surface form is rare in its task (``rarity_ratio <=
   rare_max_ratio``: its skeleton group is at most that share of the task's dominant form) or
   the target is unusually long (``rarity_target_len_z >= complex_min_len_z``).
7. ``unexplained`` otherwise (the "none of the five" bucket).

Data-level causes go first because the SFT data itself shows them. The knowledge probe comes
before the dynamics-based forgetting rule: a sample whose prerequisite knowledge is absent or
contradicted is often memorised for a while and then lost (the model falls back to its prior),
which looks like forgetting in the dynamics but is explained by the knowledge problem. Forgetting
comes before rarity: a rare sample that was reproduced and then lost was optimised enough.
Conflict comes before missing knowledge because a confident wrong base answer is the more
specific finding. Every threshold is relative to the run itself (shares of the task's dominant
form, z-scores within the task, the probe's confidence on known samples), so no number is tuned
to one world.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import pandas as pd

CAUSES = ("missing_knowledge", "conflict", "inconsistency", "forgetting", "rare_complex")
UNEXPLAINED = "unexplained"
NO_CAUSE = "none"   # planted label of unlearned samples that carry no planted cause


class DiagnosisInputError(ValueError):
    """Bad input to the diagnosis (empty set of unlearned samples, missing columns...)."""


@dataclass(frozen=True)
class CascadeThresholds:
    """Thresholds of the rule cascade (see module docstring). Validated on construction."""
    rare_max_ratio: float = 0.25                # skeleton group size / the task's dominant form
    complex_min_len_z: float = 3.0              # target length z-score within the task
    overwrite_is_forgetting: bool = True        # a later-stage copy with another target -> forgetting
    dynamics_forgetting: bool = True            # learned in its stage, unlearned later -> forgetting
    robust_z: bool = False                      # complexity on the robust length z (median/MAD): adaptive cuts

    def __post_init__(self):
        if not 0.0 <= self.rare_max_ratio <= 1.0:
            raise DiagnosisInputError(f"rare_max_ratio must be in [0, 1], got {self.rare_max_ratio}")
        if not self.complex_min_len_z > 0:
            raise DiagnosisInputError(f"complex_min_len_z must be > 0, got {self.complex_min_len_z}")

    @classmethod
    def from_mapping(cls, values) -> "CascadeThresholds":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            raise DiagnosisInputError(f"unknown cascade threshold(s) {bad}; allowed: {sorted(known)}")
        return cls(**dict(values))


def unlearned_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``table`` with ``learned == False``; clear error when there are none."""
    if "learned" not in table.columns:
        raise DiagnosisInputError("the per-sample table has no 'learned' column; pass correct= to signal_table")
    sub = table[~table["learned"].astype(bool)]
    if sub.empty:
        raise DiagnosisInputError(f"no unlearned samples among {len(table)}: every training sample is "
                                  "reproduced exactly, so there is nothing to diagnose")
    return sub


def _get(row, name, default=None):
    val = row.get(name, default)
    if val is None or (isinstance(val, float) and np.isnan(val)):
        return default
    return val


def diagnose_row(row: pd.Series, th: CascadeThresholds) -> tuple[str, str]:
    """(cause, evidence) for one per-sample row (a Series from the signal table)."""
    if bool(_get(row, "incons_flag", False)):
        return "inconsistency", (f"prompt has {int(_get(row, 'incons_group_size', 1))} copies with "
                                 f"{int(_get(row, 'incons_n_targets', 1))} distinct targets; most similar prompt with "
                                 f"another target: {_get(row, 'incons_partner', '-')} "
                                 f"(sim {float(_get(row, 'incons_max_similarity', 0.0)):.2f})")
    if th.overwrite_is_forgetting and bool(_get(row, "overwrite_later", False)):
        return "forgetting", (f"its prompt is retrained with another target in a later stage "
                              f"({_get(row, 'overwrite_by', '-')})")
    cat = _get(row, "probe_category", "not_probed")
    probe_txt = (f"base model answers '{_get(row, 'probe_base_answer', '')}' with confidence "
                 f"{float(_get(row, 'probe_base_conf', 0.0)):.3f} (threshold from known samples "
                 f"{float(_get(row, 'probe_conflict_threshold', float('nan'))):.3f}); target prob "
                 f"{float(_get(row, 'probe_target_prob', 0.0)):.3f}")
    if cat == "conflict":
        return "conflict", probe_txt
    if cat == "unknown":
        return "missing_knowledge", probe_txt
    if th.dynamics_forgetting and bool(_get(row, "dyn_stage_forgotten", False)):
        return "forgetting", (f"learned at the end of its stage {int(_get(row, 'stage', 0))}, "
                              f"unlearned after later stage(s); {int(_get(row, 'dyn_forgetting_events', 0))} "
                              "forgetting events")
    ratio = float(_get(row, "rarity_ratio", 1.0))
    len_z = float(_get(row, "rarity_target_len_rz" if th.robust_z else "rarity_target_len_z", 0.0))
    reasons = []
    if ratio <= th.rare_max_ratio:
        reasons.append(f"prompt form '{_get(row, 'rarity_skeleton', '')}' has {int(_get(row, 'rarity_group_size', 0))} "
                       f"samples, {ratio:.3f} of the task's dominant form")
    if len_z >= th.complex_min_len_z:
        reasons.append(f"target length z {len_z:.1f} >= {th.complex_min_len_z}")
    if reasons:
        never = float(_get(row, "dyn_max_in_stage", float("nan")))
        if never == 0.0:
            reasons.append("never reproduced during its stage")
        return "rare_complex", "; ".join(reasons)
    return UNEXPLAINED, "no rule fired"


def diagnose(table: pd.DataFrame, *, thresholds: CascadeThresholds | None = None,
             only_unlearned: bool = True) -> pd.DataFrame:
    """Apply the cascade to the (unlearned) rows of ``table``.

    Returns a DataFrame indexed like the selected rows with columns ``diagnosis`` (one of
    ``CAUSES`` or ``"unexplained"``) and ``evidence`` (the deciding rule's numbers, as text).
    Raises ``DiagnosisInputError`` when there is nothing to diagnose.
    """
    th = thresholds or CascadeThresholds()
    rows = unlearned_rows(table) if only_unlearned else table
    if rows.empty:
        raise DiagnosisInputError("diagnose: the table is empty")
    out = [diagnose_row(row, th) for _, row in rows.iterrows()]
    return pd.DataFrame(out, index=rows.index, columns=["diagnosis", "evidence"])


# --------------------------------------------------------------------------- learned variant
FEATURE_PREFIXES = ("dyn_", "probe_", "incons_", "rarity_", "conflict_")


def feature_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Numeric features for the learned diagnoser: every numeric/bool signal column plus one-hot
    knowledge categories and stage. Text columns (answers, partners) are dropped."""
    cols = [c for c in table.columns if c.startswith(FEATURE_PREFIXES)]
    feats = {}
    for c in cols:
        s = table[c]
        if c == "probe_category":
            for cat in ("known", "maybe_known", "unknown", "not_probed"):
                feats[f"probe_is_{cat}"] = (s == cat).astype(float)
        elif pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            feats[c] = s.astype(float)
    if "stage" in table:
        feats["stage"] = table["stage"].astype(float)
    frame = pd.DataFrame(feats, index=table.index)
    return frame.fillna(0.0).replace([np.inf, -np.inf], 0.0)


def learned_diagnosis(table: pd.DataFrame, labels: Sequence[str], *, model: str = "forest", n_splits: int = 5,
                      seed: int = 0) -> pd.Series:
    """Cross-validated predictions of a classifier trained on the signals to predict the cause.

    ``table``: rows to diagnose (usually the unlearned ones); ``labels``: their planted causes
    (``CAUSES`` or ``"none"``). ``model``: ``"forest"`` (random forest, 200 trees) or
    ``"logistic"`` (standardised multinomial logistic regression). Stratified ``n_splits``-fold
    CV (reduced to the smallest class size, at least 2); returns out-of-fold predictions, so each
    sample is diagnosed by a model that never saw its label. ``"none"`` predictions are mapped
    to ``"unexplained"``.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model not in ("forest", "logistic"):
        raise DiagnosisInputError(f"model must be 'forest' or 'logistic', got {model!r}")
    y = np.asarray(labels, dtype=object)
    if len(y) != len(table):
        raise DiagnosisInputError(f"labels has {len(y)} entries for {len(table)} rows")
    if len(y) == 0:
        raise DiagnosisInputError("learned_diagnosis: no rows")
    x = feature_matrix(table).to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        pred = np.full(len(y), classes[0], dtype=object)
    else:
        # classes with a single example cannot be stratified: fold them into the CV as-is
        k = max(2, min(n_splits, int(counts[counts >= 2].min()) if (counts >= 2).any() else 2))
        keep = np.isin(y, classes[counts >= k])
        clf = (RandomForestClassifier(n_estimators=200, random_state=seed, class_weight="balanced")
               if model == "forest" else
               make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")))
        pred = np.full(len(y), UNEXPLAINED, dtype=object)
        if keep.sum() >= k and len(np.unique(y[keep])) >= 2:
            cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            pred[keep] = cross_val_predict(clf, x[keep], y[keep], cv=cv)
    pred = np.where(pred == NO_CAUSE, UNEXPLAINED, pred)
    return pd.Series(pred, index=table.index, name="learned_diagnosis")


# --------------------------------------------------------------------------- validation
def confusion(planted: Sequence[str], diagnosed: Sequence[str]) -> pd.DataFrame:
    """Counts, rows = planted cause (``CAUSES`` + ``"none"``), columns = diagnosis
    (``CAUSES`` + ``"unexplained"``). Labels outside these sets raise ``DiagnosisInputError``."""
    p, d = list(planted), list(diagnosed)
    if len(p) != len(d):
        raise DiagnosisInputError(f"planted ({len(p)}) and diagnosed ({len(d)}) differ in length")
    rows, cols = list(CAUSES) + [NO_CAUSE], list(CAUSES) + [UNEXPLAINED]
    bad = sorted({x for x in p if x not in rows} | {x for x in d if x not in cols})
    if bad:
        raise DiagnosisInputError(f"unknown label(s) {bad}; planted must be in {rows}, diagnosed in {cols}")
    mat = pd.DataFrame(0, index=pd.Index(rows, name="planted"), columns=pd.Index(cols, name="diagnosed"))
    for a, b in zip(p, d):
        mat.loc[a, b] += 1
    return mat


def per_cause_scores(conf: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per cause from a :func:`confusion` matrix.

    Precision of cause c = conf[c, c] / column sum (every sample diagnosed c, including
    unplanted ones); recall = conf[c, c] / row sum. A cause with no planted and no diagnosed
    samples gets NaN (left out of the macro average)."""
    out = []
    for c in CAUSES:
        tp = float(conf.loc[c, c])
        col, row = float(conf[c].sum()), float(conf.loc[c].sum())
        prec = tp / col if col else (np.nan if not row else 0.0)
        rec = tp / row if row else (np.nan if not col else 0.0)
        f1 = (2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0) if not (np.isnan(prec) or np.isnan(rec)) else np.nan
        out.append({"cause": c, "precision": prec, "recall": rec, "f1": f1, "support": int(row)})
    return pd.DataFrame(out).set_index("cause")


def macro_f1(conf: pd.DataFrame) -> float:
    """Mean F1 over the causes that have planted or diagnosed samples."""
    f1 = per_cause_scores(conf)["f1"].dropna()
    if f1.empty:
        raise DiagnosisInputError("macro_f1: no cause was planted or diagnosed")
    return float(f1.mean())
