"""Chance level of a top-k overlap and a chance-corrected drift index (issue 27).

The drift index ``D = 1 - C / sqrt(R_t R_s)`` (:func:`epi_utils.importance.drift.drift_index`) is
not chance-corrected: two *unrelated* top-k sets of n positions still share ``k^2 / n`` positions on
average, so their Jaccard is about ``k / (2n - k)`` (0.026 for a top-5% set) and D stays below 1
(about 0.96 there). The corrected index subtracts that chance level from every overlap first, as
Cohen's kappa does for agreement:

``D* = 1 - (C - J0) / sqrt((R_t - J0) (R_s - J0))``

0 when the sets agree across time as well as the estimator agrees with itself, 1 when the
cross-time overlap is at chance, NaN when a reliability is not above chance (nothing to normalise by).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps


def chance_jaccard(k: int, n: int, *, exact: bool = True) -> float:
    """Expected Jaccard of two independent, uniformly random ``k``-subsets of ``n`` positions.

    ``exact``: ``E[I / (2k - I)]`` with the overlap ``I ~ Hypergeometric(n, k, k)``; otherwise the
    ratio of expectations ``k / (2n - k)`` (within 1e-3 of the exact value once ``k >= 100``).
    Example: ``n = 4, k = 2``: ``P(I = 0, 1, 2) = 1/6, 4/6, 1/6`` -> ``4/6 * 1/3 + 1/6 * 1 = 7/18``
    (ratio of expectations: ``1/3``).
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n or not 1 <= k <= n:
        raise ValueError(f"need integers 1 <= k <= n, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if not exact:
        return k / (2 * n - k)
    lo = max(0, 2 * k - n)
    i = np.arange(lo, k + 1)
    pmf = sps.hypergeom.pmf(i, n, k, k)
    return float(np.sum(pmf * i / (2 * k - i)))


def chance_corrected(value: float, chance: float) -> float:
    """``(value - chance) / (1 - chance)``: 0 at chance, 1 at full overlap (kappa's form)."""
    if not 0 <= chance < 1:
        raise ValueError(f"chance must be in [0, 1), got {chance!r}")
    return float((value - chance) / (1.0 - chance))


def drift_index_corrected(cross: float, rel_t: float, rel_s: float, chance: float) -> float:
    """``1 - (cross - chance) / sqrt((rel_t - chance) (rel_s - chance))`` (module docstring);
    NaN when a reliability is not above ``chance`` or a value is NaN.

    Example: ``cross 0.3, reliabilities 0.6 and 0.6, chance 0.1``: ``1 - 0.2 / 0.5 = 0.6``
    (the uncorrected index is ``1 - 0.3 / 0.6 = 0.5``).
    """
    if any(math.isnan(v) for v in (cross, rel_t, rel_s, chance)) or not (rel_t > chance and rel_s > chance):
        return float("nan")
    return float(1.0 - (cross - chance) / math.sqrt((rel_t - chance) * (rel_s - chance)))


def drift_index_at_chance(chance: float, rel_t: float, rel_s: float) -> float:
    """What the *uncorrected* D reads when the cross-time overlap is at chance:
    ``1 - chance / sqrt(rel_t rel_s)`` (the chance line of a figure of D). Example: a top-5% set
    (chance 0.026) with reliabilities 0.6 and 0.6: ``1 - 0.026 / 0.6 = 0.957``, not 1."""
    if not (rel_t > 0 and rel_s > 0):
        return float("nan")
    return float(1.0 - chance / math.sqrt(rel_t * rel_s))
