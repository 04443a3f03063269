"""Episode metrics for multi-label few-shot ACD (Hu et al. 2021 report AUC and macro-F1,
averaged over test episodes).

Per episode with labels ``y (M, N)`` multi-hot and scores/predictions ``(M, N)``:

* :func:`episode_auc`: macro ROC-AUC over the N classes (mean of the per-class AUCs; classes
  whose column is all 0 or all 1 are skipped), ties counted 1/2 (Mann-Whitney U); equals
  ``sklearn.metrics.roc_auc_score(y, s, average="macro")`` when every class has both values.
* :func:`episode_macro_f1`: mean over classes of ``2TP / (2TP + FP + FN)`` (0 when the
  denominator is 0, like ``f1_score(..., average="macro", zero_division=0)``).
* :func:`instance_f1`: per query row, ``2TP / (2TP + FP + FN)`` (the REINFORCE reward).
* :func:`episode_summary`: mean and Student-t 95% interval over episodes.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _check(y: np.ndarray, s: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y), np.asarray(s)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"labels and {name} must both be (M, N) arrays, got {y.shape} and {s.shape}")
    return y.astype(bool), s


def binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC of one class via ranks (ties 1/2); NaN when ``y`` is constant."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def episode_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Macro AUC over classes (columns) with both positive and negative rows."""
    y, s = _check(labels, scores, "scores")
    vals = [binary_auc(y[:, j], s[:, j]) for j in range(y.shape[1])]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def confusion_counts(labels: np.ndarray, preds: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(TP, FP, FN)`` summed over ``axis`` (0: per class, 1: per instance)."""
    y, p = _check(labels, preds, "preds")
    p = p.astype(bool)
    return (y & p).sum(axis), (~y & p).sum(axis), (y & ~p).sum(axis)


def _f1(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(a, dtype=float) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def episode_macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Macro-F1 over the N classes of one episode."""
    return float(_f1(*confusion_counts(labels, preds, axis=0)).mean())


def per_class_f1(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """F1 of each class (column), shape ``(N,)``."""
    return _f1(*confusion_counts(labels, preds, axis=0))


def instance_f1(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """F1 of each instance (row), shape ``(M,)``."""
    return _f1(*confusion_counts(labels, preds, axis=1))


def episode_summary(values, *, confidence: float = 0.95) -> dict[str, float | list[float] | int]:
    """``{"mean", "ci95": [lo, hi], "n"}`` over episodes with a Student-t interval."""
    from epi_utils.workbench.stats import t_ci

    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    lo, hi = t_ci(arr, confidence=confidence)
    return {"mean": float(arr.mean()), "ci95": [lo, hi], "n": int(arr.size)}
