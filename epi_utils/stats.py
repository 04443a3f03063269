"""Statistics over seeds: bootstrap confidence intervals and aggregation.

Percentile bootstrap (Efron & Tibshirani 1993): resample the per-seed values with
replacement ``n_boot`` times, take the mean of each resample, report the
``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles of those means.
With a single value the interval collapses to that value (no spread can be estimated).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_boot: int = 10_000,
                 rng: np.random.Generator | int | None = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (shape ``(n,)``).

    NaNs are dropped. Raises ``ValueError`` on an empty input or a confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one non-NaN value")
    if arr.size == 1 or np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, arr.size, size=(n_boot, arr.size))
    means = arr[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def t_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (for many i.i.d. values, e.g. 600 episodes)."""
    from scipy import stats as sps

    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise ValueError("t_ci needs at least one non-NaN value")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean
    half = float(sps.t.ppf((1 + confidence) / 2, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size))
    return mean - half, mean + half


def mean_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_boot: int = 10_000,
            rng: np.random.Generator | int | None = 0) -> dict[str, float | list[float] | int]:
    """``{"mean": m, "ci95": [lo, hi], "n": n}`` with a percentile-bootstrap interval."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    lo, hi = bootstrap_ci(arr, confidence=confidence, n_boot=n_boot, rng=rng)
    return {"mean": float(arr.mean()), "ci95": [lo, hi], "n": int(arr.size)}


def with_ci(name: str, values: Sequence[float] | np.ndarray, **kwargs) -> dict[str, float | list[float]]:
    """``{name: mean, name + "_ci95": [lo, hi]}``: the ``metrics.json`` convention for a headline."""
    summary = mean_ci(values, **kwargs)
    return {name: summary["mean"], f"{name}_ci95": summary["ci95"]}


def summarize_over_seeds(rows: Iterable[Mapping[str, float]], *, group_keys: Sequence[str] = (),
                         value_keys: Sequence[str] | None = None, confidence: float = 0.95):
    """Aggregate rows (one per seed/run) into mean and bootstrap CI per group.

    Returns a ``pandas.DataFrame`` with columns ``group_keys + [metric, mean, ci_low, ci_high, n]``.
    ``value_keys`` defaults to every numeric column that is not a group key.
    """
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("summarize_over_seeds got no rows")
    missing = [k for k in group_keys if k not in frame.columns]
    if missing:
        raise KeyError(f"group key(s) {missing} not in rows; columns are {sorted(frame.columns)}")
    if value_keys is None:
        value_keys = [c for c in frame.columns if c not in group_keys and pd.api.types.is_numeric_dtype(frame[c])]
    out = []
    groups = frame.groupby(list(group_keys), dropna=False, sort=True) if group_keys else [((), frame)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in value_keys:
            vals = pd.to_numeric(sub[metric], errors="coerce").to_numpy(dtype=float)
            vals = vals[~np.isnan(vals)]
            if vals.size == 0:
                continue
            lo, hi = bootstrap_ci(vals, confidence=confidence)
            out.append({**dict(zip(group_keys, key)), "metric": metric, "mean": float(vals.mean()),
                        "ci_low": lo, "ci_high": hi, "n": int(vals.size)})
    return pd.DataFrame(out)
