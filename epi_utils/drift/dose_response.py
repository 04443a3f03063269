"""Dose-response of the functional test against the drift index (issue 27).

At the last checkpoint's weights, the top-k masks measured at earlier checkpoints t are ablated; the
*dose* is the drift index ``D(t, last)`` and the *response* the extra held-out loss of the current
mask over the step-t mask (or any other pair of columns). If D tracks what matters, the response
grows with D: the slope is positive.

:func:`unit_slopes` fits one least-squares line per unit (an independently pretrained model, or a
run), :func:`slope_table` states the mean slope with its Student-t interval over those units
(slopes of one unit's points are not independent of each other; the units are), per group (task,
regime) and pooled.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.workbench import stats


def ols_slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x`` (shape ``(m,)`` each, NaN pairs dropped):
    ``sum((x - mean x)(y - mean y)) / sum((x - mean x)^2)``; NaN with fewer than two distinct x.
    Example: ``x = [0, 1, 2], y = [1, 2, 4]``: ``(-1 * -4/3 + 1 * 5/3) / 2 = 1.5``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of one length, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if np.unique(x).size < 2:
        return float("nan")
    dx = x - x.mean()
    return float(np.sum(dx * (y - y.mean())) / np.sum(dx * dx))


def unit_slopes(frame: pd.DataFrame, *, x: str, y: str, unit_column: str = "unit",
                by: Sequence[str] = (), within: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (``by`` group, unit): the slope of ``y`` on ``x`` over that unit's rows and the
    number of points ``m``. With ``within`` (e.g. the training arm), one slope per ``within`` group
    first, then their mean per (``by`` group, unit) (``m`` summed): the slope inside each group, free of
    the differences between groups. Groups and units keep ``frame``'s order of first appearance."""
    keys = [*by, *within, unit_column]
    rows = []
    for key, sub in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), "slope": ols_slope(sub[x], sub[y]), "m": int(len(sub))})
    out = pd.DataFrame(rows, columns=[*keys, "slope", "m"])
    if within:
        out = (out.groupby([*by, unit_column], sort=False)
               .agg(slope=("slope", "mean"), m=("m", "sum")).reset_index())
    return out


def slope_table(frame: pd.DataFrame, *, x: str, y: str, unit: str, unit_column: str = "unit",
                by: Sequence[str] = (), within: Sequence[str] = (), pooled: bool = True) -> pd.DataFrame:
    """Mean per-unit slope of ``y`` on ``x`` with its t-interval over units (columns ``slope``,
    ``slope_low``, ``slope_high``, ``n``, ``unit``), one row per ``by`` group (slopes inside each
    ``within`` group, averaged: :func:`unit_slopes`); with ``pooled`` a last row whose ``by`` columns
    read ``"pooled"``: each unit's slope over all its points, or with ``within`` the mean of its
    slopes over every ``by`` x ``within`` group."""
    by = list(by)
    per_unit = unit_slopes(frame, x=x, y=y, unit_column=unit_column, by=by, within=within)
    out = stats.interval_table(per_unit, by=by, columns=("slope",), unit=unit, unit_column=unit_column,
                               method="t")
    if pooled and by:
        if within:
            whole = (unit_slopes(frame, x=x, y=y, unit_column=unit_column, within=[*by, *within])
                     .groupby(unit_column, sort=False)["slope"].mean().reset_index())
        else:
            whole = unit_slopes(frame, x=x, y=y, unit_column=unit_column)
        row = stats.interval_table(whole, by=[], columns=("slope",), unit=unit, unit_column=unit_column, method="t")
        for column in by:
            row[column] = "pooled"
        out = pd.concat([out, row[out.columns]], ignore_index=True)
    return out
