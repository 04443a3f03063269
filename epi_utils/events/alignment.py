"""Probe-label alignment: which probe is trained to produce which gold record.

``hungarian``: bipartite matching (Kuhn 1955; ``scipy.optimize.linear_sum_assignment``) between
the K probes of an event type and its G gold records, minimising the cost of each probe
producing that record (negative mean log-likelihood of the record's slots plus the negative log
probability that the probe emits a record), as in DETR (Carion et al., 2020) and DE-PPN
(Yang et al., 2021). Only matched probes learn those records; the rest learn to emit none.
``fixed``: the ablation without alignment: gold record j goes to probe j in annotation order.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

MODES = ("hungarian", "fixed")


def assign(cost: np.ndarray, *, mode: str = "hungarian") -> list[tuple[int, int]]:
    """Pairs ``(probe, gold record)`` for a cost matrix ``[K probes, G records]``.

    At most ``min(K, G)`` pairs. ``fixed`` ignores the costs and pairs ``(j, j)``.
    """
    if mode not in MODES:
        raise ValueError(f"alignment mode must be one of {MODES}, got {mode!r}")
    cost = np.asarray(cost, dtype=float)
    if cost.ndim != 2:
        raise ValueError(f"cost must be 2-D [probes, records], got shape {cost.shape}")
    K, G = cost.shape
    if K == 0 or G == 0:
        return []
    if mode == "fixed":
        return [(j, j) for j in range(min(K, G))]
    rows, cols = linear_sum_assignment(np.nan_to_num(cost, nan=1e6, posinf=1e6))
    return [(int(r), int(c)) for r, c in zip(rows, cols)]


def best_record(cost: np.ndarray) -> np.ndarray:
    """For every probe the gold record it fits best (``argmin`` over records, not one-to-one):
    the grouping used by the probe consistency loss. Shape ``[K]``."""
    return np.asarray(cost).argmin(axis=1)
