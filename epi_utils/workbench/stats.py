"""Intervals that hold their coverage, and paired comparisons: the statistics every study uses.

Which interval for which unit (docs/architecture.md, "Scientific standards"):

- **Few units** (seeds, pretraining seeds, a handful of worlds): the Student-t interval of the mean,
  ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)`` (:func:`t_ci`). A percentile bootstrap over 3 seed
  means has only 10 distinct resamples and covers a 95% target about 75% of the time; the t interval
  holds 93-97% (``tests/test_stats.py`` measures it by simulation).
- **Many units** (episodes, documents, samples; ``n >= 30``): the percentile bootstrap
  (Efron & Tibshirani 1993, :func:`bootstrap_ci`) is fine, and so is t.

- **Bounded scales** (accuracies, F1, shares of samples: values in ``[0, 1]`` or another ``bounds``):
  pass ``bounds=(0, 1)`` to :func:`interval` / :func:`interval_table` and the interval stays inside
  them. Values that are all 0 or 1 (one yes/no per unit) get the Wilson score interval of a
  proportion (:func:`wilson_ci`, Wilson 1927); other values over few units the logit-scale
  t-interval of the mean (:func:`logit_t_ci`); a bootstrap over many units is left as it is (a mean
  of values inside the bounds is inside them). The default (``bounds=None``) changes no number.

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
import functools
import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

#: below this many units a bootstrap interval under-covers; :func:`interval` uses t instead.
MIN_UNITS_FOR_BOOTSTRAP = 30


@functools.lru_cache(maxsize=256)
def _t_quantile(q: float, dof: int) -> float:
    """``t_{q, dof}``, cached: intervals are computed thousands of times in coverage simulations."""
    from scipy import stats as sps

    return float(sps.t.ppf(q, dof))


@functools.lru_cache(maxsize=64)
def _z_quantile(q: float) -> float:
    from scipy import stats as sps

    return float(sps.norm.ppf(q))


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
    _check_confidence(confidence)
    arr = _clean(values, "t_ci")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean
    half = float(_t_quantile((1 + confidence) / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean - half, mean + half


def wilson_ci(successes: float, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: ``successes`` out of ``n`` trials (Wilson 1927).

    ``(p + z^2/2n -+ z * sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = successes / n`` and
    ``z`` the normal quantile at ``(1 + confidence) / 2``. Always inside ``[0, 1]``, and not
    degenerate at 0 or ``n`` successes (0 of 10 gives ``[0, 0.278]``), unlike the Wald interval
    ``p +- z sqrt(p(1-p)/n)``. Raises ``ValueError`` unless ``0 <= successes <= n`` and ``n >= 1``.
    """
    _check_confidence(confidence)
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_ci needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = _z_quantile((1 + confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


def _to_unit(arr: np.ndarray, bounds: tuple[float, float], what: str) -> tuple[np.ndarray, float, float]:
    """``arr`` rescaled from ``bounds`` to ``[0, 1]`` (and the bounds), refusing values outside them."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: bounds must be a pair (low, high), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{what}: bounds must be finite with low < high, got {bounds!r}")
    if arr.min() < lo or arr.max() > hi:
        raise ValueError(f"{what}: values outside bounds {bounds!r} (min {arr.min():g}, max {arr.max():g})")
    return (arr - lo) / (hi - lo), lo, hi


def logit_t_ci(values: Sequence[float] | np.ndarray, *, bounds: tuple[float, float] = (0.0, 1.0),
               confidence: float = 0.95) -> tuple[float, float]:
    """Logit-scale Student-t interval of the mean of ``values`` (shape ``(n,)``) on a bounded scale.

    With ``m`` the mean rescaled to ``[0, 1]`` and ``se = s / sqrt(n)`` its standard error, the
    interval is built on the logit scale, where the mean's standard error is ``se / (m (1 - m))``
    (the delta method), and mapped back::

        expit(logit(m) -+ t_{(1+confidence)/2, n-1} * se / (m (1 - m)))

    It is an interval for the **arithmetic mean** (the number a table prints beside it), it always
    contains ``m``, never leaves ``bounds``, and is asymmetric near a bound, where the t interval
    runs past it. Values at a bound need no continuity shift: only the mean is transformed, and it
    sits at a bound only when every value does, in which case (as with any constant values) the
    interval is the degenerate ``(m, m)`` -- report ``n`` (or use :func:`wilson_ci` when each value
    is one yes/no). One value gives ``(v, v)`` as :func:`t_ci` does. NaNs are dropped.
    ``tests/test_stats_bounds.py`` measures its coverage of the mean of Beta-distributed scores near 0.95
    over 3 and 8 seeds by simulation (93-97%, where the t interval leaves ``[0, 1]`` in most draws).
    """
    _check_confidence(confidence)
    arr = _clean(values, "logit_t_ci")
    unit, lo, hi = _to_unit(arr, bounds, "logit_t_ci")
    m = float(unit.mean())
    mean = float(arr.mean())
    if arr.size == 1 or m <= 0.0 or m >= 1.0:
        return mean, mean
    se = float(unit.std(ddof=1)) / math.sqrt(arr.size)
    if se == 0.0:
        return mean, mean
    half = _t_quantile((1 + confidence) / 2, arr.size - 1) * se / (m * (1.0 - m))
    centre = math.log(m / (1.0 - m))
    expit = lambda x: 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    return lo + (hi - lo) * expit(centre - half), lo + (hi - lo) * expit(centre + half)


def _is_binary(unit: np.ndarray) -> bool:
    return bool(np.all((unit == 0.0) | (unit == 1.0)))


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval, the unit it is over and how it was computed."""

    mean: float
    low: float
    high: float
    n: int
    unit: str
    method: str  # "t", "bootstrap", "logit-t" or "wilson"
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
             method: str = "auto", rng: np.random.Generator | int | None = 0,
             bounds: tuple[float, float] | None = None) -> Interval:
    """The interval of the mean of ``values`` (one per ``unit``: "seeds", "episodes", ...).

    ``method``: ``"t"``, ``"bootstrap"``, or ``"auto"`` (t below :data:`MIN_UNITS_FOR_BOOTSTRAP`
    units, bootstrap from there on). A bootstrap asked for over fewer units is refused.

    ``bounds=(low, high)`` (e.g. ``(0, 1)`` for accuracies and shares) keeps the interval inside
    them: values all at ``low`` or ``high`` (one yes/no per unit) get the Wilson interval
    (:func:`wilson_ci`, ``method="wilson"``), whatever ``method`` says; otherwise where t would be
    used the logit-scale t interval (:func:`logit_t_ci`, ``method="logit-t"``); a bootstrap stays
    a bootstrap (its resampled means cannot leave the bounds). A value outside ``bounds`` raises
    ``ValueError``. The default ``None`` changes nothing.
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
    if bounds is not None:
        scaled, lo_b, hi_b = _to_unit(arr, bounds, "interval")
        if _is_binary(scaled):
            p_lo, p_hi = wilson_ci(float(scaled.sum()), int(scaled.size), confidence=confidence)
            lo, hi = lo_b + (hi_b - lo_b) * p_lo, lo_b + (hi_b - lo_b) * p_hi
            return Interval(float(arr.mean()), lo, hi, int(arr.size), unit, "wilson", confidence)
        if method == "t":
            lo, hi = logit_t_ci(arr, bounds=(lo_b, hi_b), confidence=confidence)
            return Interval(float(arr.mean()), lo, hi, int(arr.size), unit, "logit-t", confidence)
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


def interval_table(frame, *, by: Sequence[str], columns: Sequence[str], unit: str, unit_column: str | None = "unit",
                   confidence: float = 0.95, method: str = "t", bounds: tuple[float, float] | None = None):
    """The one table of means with intervals that every summary and error bar uses.

    One row per combination of ``by``; for each ``column``: ``<column>`` (mean), ``<column>_low``,
    ``<column>_high`` (the :func:`interval` over the rows of the group, one row per ``unit``; NaNs
    dropped), then ``n`` (distinct values of ``unit_column`` in the group, or its row count when
    ``unit_column`` is None or absent) and ``unit``. Groups keep ``frame``'s order of first appearance.

    ``bounds=(0, 1)`` (keyword-only, default off) keeps every interval inside the bounds: Wilson for
    yes/no columns, logit-scale t for other bounded scores (:func:`interval`).
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
                iv = interval(vals, unit=unit, confidence=confidence, method=method, bounds=bounds)
                row.update({c: iv.mean, f"{c}_low": iv.low, f"{c}_high": iv.high})
        row["n"] = int(sub[unit_column].nunique()) if unit_column and unit_column in sub else int(len(sub))
        row["unit"] = unit
        rows.append(row)
    return pd.DataFrame(rows)
