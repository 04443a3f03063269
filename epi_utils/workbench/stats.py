"""Intervals that hold their coverage, and paired comparisons: the statistics every study uses.

Which interval for which unit (docs/architecture.md, "Scientific standards"):

- **Few units** (seeds, pretraining seeds, a handful of worlds): the Student-t interval of the mean,
  ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)`` (:func:`t_ci`). A percentile bootstrap over 3 seed
  means has only 10 distinct resamples and covers a 95% target about 75% of the time; the t interval
  holds 93-97% (``tests/test_stats.py`` measures it by simulation).
- **Many units** (episodes, documents, samples; ``n >= 30``): the percentile bootstrap
  (Efron & Tibshirani 1993, :func:`bootstrap_ci`) is fine, and so is t.

Every interval is reported with the unit it is taken over (``Interval.unit``), so a table can say
"95% t-interval over 8 seeds".

"A beats B" is a **paired** difference over the same units (rliable's stance, Agarwal et al. 2021:
report the uncertainty of the difference, not whether two intervals overlap): :func:`compare`
returns a :class:`Comparison` with the mean difference, its interval, a p-value (paired t-test),
``n`` and a :class:`Verdict`. Beside a null result, ``Comparison.detectable`` is the smallest
effect the design could detect (the half-width of the difference's interval).
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

#: below this many units a bootstrap interval under-covers; :func:`interval` uses t instead.
MIN_UNITS_FOR_BOOTSTRAP = 30


def _clean(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise ValueError(f"{what} needs at least one non-NaN value")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_boot: int = 10_000,
                 rng: np.random.Generator | int | None = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (shape ``(n,)``).

    For many units only (episodes, documents): over a few seeds it under-covers, use :func:`t_ci`.
    NaNs are dropped. Raises ``ValueError`` on an empty input or a confidence outside (0, 1).
    """
    _check_confidence(confidence)
    arr = _clean(values, "bootstrap_ci")
    if arr.size == 1 or np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, arr.size, size=(n_boot, arr.size))
    means = arr[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def t_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``values`` (shape ``(n,)``), NaNs dropped.

    ``mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation.
    One value gives the degenerate interval ``(v, v)``: no spread can be estimated (report ``n``).
    """
    from scipy import stats as sps

    _check_confidence(confidence)
    arr = _clean(values, "t_ci")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean
    half = float(sps.t.ppf((1 + confidence) / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean - half, mean + half


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval, the unit it is over and how it was computed."""

    mean: float
    low: float
    high: float
    n: int
    unit: str
    method: str  # "t" or "bootstrap"
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def label(self) -> str:
        """``"95% t-interval over 8 seeds"``: the caption a table prints beside the numbers."""
        return f"{round(self.confidence * 100)}% {self.method}-interval over {self.n} {self.unit}"

    def to_dict(self) -> dict:
        return asdict(self)


def interval(values: Sequence[float] | np.ndarray, *, unit: str, confidence: float = 0.95,
             method: str = "auto", rng: np.random.Generator | int | None = 0) -> Interval:
    """The interval of the mean of ``values`` (one per ``unit``: "seeds", "episodes", ...).

    ``method``: ``"t"``, ``"bootstrap"``, or ``"auto"`` (t below :data:`MIN_UNITS_FOR_BOOTSTRAP`
    units, bootstrap from there on). A bootstrap asked for over fewer units is refused.
    """
    if not unit or not isinstance(unit, str):
        raise ValueError("interval needs the unit the values are over, e.g. unit='seeds'")
    if method not in ("auto", "t", "bootstrap"):
        raise ValueError(f"method must be one of ('auto', 't', 'bootstrap'), got {method!r}")
    arr = _clean(values, "interval")
    if method == "auto":
        method = "bootstrap" if arr.size >= MIN_UNITS_FOR_BOOTSTRAP else "t"
    if method == "bootstrap" and arr.size < MIN_UNITS_FOR_BOOTSTRAP:
        raise ValueError(f"a bootstrap over {arr.size} {unit} under-covers; use method='t' "
                         f"(bootstrap needs >= {MIN_UNITS_FOR_BOOTSTRAP} units)")
    lo, hi = (t_ci(arr, confidence=confidence) if method == "t"
              else bootstrap_ci(arr, confidence=confidence, rng=rng))
    return Interval(float(arr.mean()), lo, hi, int(arr.size), unit, method, confidence)


class Verdict(str, enum.Enum):
    """Outcome of a paired comparison of A against B (``higher_is_better`` decides the direction)."""

    A_BETTER = "a_better"
    B_BETTER = "b_better"
    NO_DIFFERENCE = "no_difference"      # the interval of the difference contains 0
    NOT_ENOUGH_DATA = "not_enough_data"  # fewer than 2 paired units: no interval


@dataclass(frozen=True)
class Comparison:
    """``a - b`` over paired units: mean difference, its interval, paired-t p-value and verdict.

    ``detectable``: the smallest true difference this design could tell from 0 (the half-width of
    the difference's interval); print it beside every ``NO_DIFFERENCE``.
    """

    a_name: str
    b_name: str
    metric: str
    diff: Interval
    a_mean: float
    b_mean: float
    p_value: float
    verdict: Verdict
    paired: bool
    higher_is_better: bool

    @property
    def detectable(self) -> float:
        return self.diff.half_width

    def to_dict(self) -> dict:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        out["detectable"] = self.detectable
        return out

    def sentence(self) -> str:
        """One line for a report, e.g. ``"epi - full_sft on forgetting: -0.05 [-0.09, -0.01] over 8
        seeds (p=0.02): epi better"``; a null result states the detectable effect."""
        d = self.diff
        head = (f"{self.a_name} - {self.b_name} on {self.metric}: {d.mean:+.3g} "
                f"[{d.low:+.3g}, {d.high:+.3g}] ({d.label()}, p={self.p_value:.2g})")
        if self.verdict is Verdict.A_BETTER:
            return f"{head}: {self.a_name} better"
        if self.verdict is Verdict.B_BETTER:
            return f"{head}: {self.b_name} better"
        if self.verdict is Verdict.NOT_ENOUGH_DATA:
            return f"{head}: not enough paired units for an interval"
        return f"{head}: no difference detected (smallest detectable: {self.detectable:.3g})"


def compare(a: Sequence[float] | np.ndarray | Mapping, b: Sequence[float] | np.ndarray | Mapping, *,
            unit: str, paired: bool = True, higher_is_better: bool = True, metric: str = "metric",
            a_name: str = "A", b_name: str = "B", confidence: float = 0.95,
            method: str = "t") -> Comparison:
    """Compare A with B on the same units (seeds, episodes, documents, samples).

    ``a``, ``b``: values of shape ``(n,)`` in the same unit order, or mappings unit-id -> value
    (paired on the shared keys; a key in only one of them is an error, so no pairing is silent).
    ``paired=True`` (default): the interval of the per-unit differences ``a_i - b_i`` (``method``
    ``"t"`` by default, ``"bootstrap"`` for many units) and a paired t-test. ``paired=False``:
    Welch's interval and test for independent samples. Units where either value is NaN are dropped
    from both. Verdict: ``A_BETTER`` when the interval lies wholly on A's good side (above 0 when
    ``higher_is_better``), ``B_BETTER`` on the other side, else ``NO_DIFFERENCE``.
    """
    from scipy import stats as sps

    _check_confidence(confidence)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise TypeError("compare: pass both a and b as mappings unit -> value, or both as arrays")
        only = sorted(set(a) ^ set(b), key=str)
        if only:
            raise ValueError(f"compare({a_name}, {b_name}): units present in only one side: {only[:10]}")
        keys = sorted(a, key=str)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    xa = np.asarray(a, dtype=float).ravel()
    xb = np.asarray(b, dtype=float).ravel()
    if paired:
        if xa.shape != xb.shape:
            raise ValueError(f"compare({a_name}, {b_name}) paired over {unit}: {xa.size} vs {xb.size} values")
        keep = ~(np.isnan(xa) | np.isnan(xb))
        xa, xb = xa[keep], xb[keep]
    else:
        xa, xb = xa[~np.isnan(xa)], xb[~np.isnan(xb)]
    if xa.size == 0 or xb.size == 0:
        raise ValueError(f"compare({a_name}, {b_name}) on {metric}: no values over {unit}")
    a_mean, b_mean = float(xa.mean()), float(xb.mean())
    if paired:
        d = xa - xb
        n = int(d.size)
        if n < 2:
            diff = Interval(float(d.mean()), float(d.mean()), float(d.mean()), n, unit, method, confidence)
            return Comparison(a_name, b_name, metric, diff, a_mean, b_mean, float("nan"),
                              Verdict.NOT_ENOUGH_DATA, True, higher_is_better)
        diff = interval(d, unit=unit, confidence=confidence, method=method)
        sd = float(d.std(ddof=1))
        if sd == 0.0:
            p = 1.0 if d.mean() == 0 else 0.0
        else:
            p = float(2 * sps.t.sf(abs(d.mean()) / (sd / math.sqrt(n)), n - 1))
    else:
        if xa.size < 2 or xb.size < 2:
            m = a_mean - b_mean
            diff = Interval(m, m, m, int(min(xa.size, xb.size)), unit, "welch", confidence)
            return Comparison(a_name, b_name, metric, diff, a_mean, b_mean, float("nan"),
                              Verdict.NOT_ENOUGH_DATA, False, higher_is_better)
        va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
        se = math.sqrt(va + vb)
        m = a_mean - b_mean
        if se == 0.0:
            diff = Interval(m, m, m, int(min(xa.size, xb.size)), unit, "welch", confidence)
            p = 1.0 if m == 0 else 0.0
        else:
            dof = (va + vb) ** 2 / (va ** 2 / (xa.size - 1) + vb ** 2 / (xb.size - 1))
            half = float(sps.t.ppf((1 + confidence) / 2, dof) * se)
            diff = Interval(m, m - half, m + half, int(min(xa.size, xb.size)), unit, "welch", confidence)
            p = float(2 * sps.t.sf(abs(m) / se, dof))
    good_low = diff.low > 0 if higher_is_better else diff.high < 0
    good_high = diff.high < 0 if higher_is_better else diff.low > 0
    verdict = Verdict.A_BETTER if good_low else Verdict.B_BETTER if good_high else Verdict.NO_DIFFERENCE
    return Comparison(a_name, b_name, metric, diff, a_mean, b_mean, p, verdict, paired, higher_is_better)


def mean_ci(values: Sequence[float] | np.ndarray, *, unit: str = "seeds", confidence: float = 0.95,
            method: str = "auto") -> dict[str, float | list[float] | int | str]:
    """``{"mean": m, "ci95": [lo, hi], "n": n, "unit": unit, "method": "t"|"bootstrap"}``."""
    iv = interval(values, unit=unit, confidence=confidence, method=method)
    return {"mean": iv.mean, "ci95": [iv.low, iv.high], "n": iv.n, "unit": iv.unit, "method": iv.method}


def with_ci(name: str, values: Sequence[float] | np.ndarray, *, unit: str = "seeds",
            **kwargs) -> dict[str, float | list[float] | str]:
    """``{name: mean, name + "_ci95": [lo, hi], name + "_ci_unit": "8 seeds (t)"}``: the
    ``metrics.json`` convention for a headline, naming the unit the interval is over."""
    s = mean_ci(values, unit=unit, **kwargs)
    return {name: s["mean"], f"{name}_ci95": s["ci95"], f"{name}_ci_unit": f"{s['n']} {unit} ({s['method']})"}


def interval_table(frame, *, by: Sequence[str], columns: Sequence[str], unit: str, unit_column: str | None = "unit",
                   confidence: float = 0.95, method: str = "t"):
    """The one table of means with intervals that every summary and error bar uses.

    One row per combination of ``by``; for each ``column``: ``<column>`` (mean), ``<column>_low``,
    ``<column>_high`` (the :func:`interval` over the rows of the group, one row per ``unit``; NaNs
    dropped), then ``n`` (distinct values of ``unit_column`` in the group, or its row count when
    ``unit_column`` is None or absent) and ``unit``. Groups keep ``frame``'s order of first appearance.
    """
    import pandas as pd

    by = list(by)
    rows = []
    for key, sub in frame.groupby(by, sort=False) if by else [((), frame)]:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for c in columns:
            vals = sub[c].to_numpy(dtype=float)
            vals = vals[~np.isnan(vals)]
            if vals.size == 0:
                row.update({c: np.nan, f"{c}_low": np.nan, f"{c}_high": np.nan})
            elif vals.size == 1:
                row.update({c: float(vals[0]), f"{c}_low": np.nan, f"{c}_high": np.nan})
            else:
                iv = interval(vals, unit=unit, confidence=confidence, method=method)
                row.update({c: iv.mean, f"{c}_low": iv.low, f"{c}_high": iv.high})
        row["n"] = int(sub[unit_column].nunique()) if unit_column and unit_column in sub else int(len(sub))
        row["unit"] = unit
        rows.append(row)
    return pd.DataFrame(rows)
