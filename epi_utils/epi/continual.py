"""Continual-learning metrics on the accuracy matrix ``R`` of a sequential schedule.

``R`` is a ``(T, T)`` array: ``R[i, j]`` = accuracy on task (or task group) ``j`` after training
stage ``i``. Definitions follow Lopez-Paz & Ranzato (2017, GEM: ACC, BWT, FWT) and Chaudhry et al.
(2018, Riemannian Walk: forgetting with the max over earlier stages).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _check(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"R must be a square (T, T) accuracy matrix, got shape {R.shape}")
    return R


def accuracy_matrix(stage_end_eval: Sequence[Mapping[str, float]], stage_tasks: Sequence[Sequence[str]]) -> np.ndarray:
    """``R[i, j]`` = mean accuracy over the tasks of stage ``j`` after stage ``i``.

    ``stage_end_eval``: per stage ``{task: accuracy}`` (``TrainResult.stage_end_eval``);
    ``stage_tasks``: tasks of each stage (``World.stage_tasks()``). Shape ``(T, T)``.
    """
    T = len(stage_tasks)
    if len(stage_end_eval) != T:
        raise ValueError(f"stage_end_eval has {len(stage_end_eval)} stages but stage_tasks has {T}")
    R = np.full((T, T), np.nan)
    for i, acc in enumerate(stage_end_eval):
        for j, tasks in enumerate(stage_tasks):
            missing = [t for t in tasks if t not in acc]
            if missing:
                raise KeyError(f"stage_end_eval[{i}] has no accuracy for tasks {missing}; evaluate on heldout "
                               "samples of every task")
            R[i, j] = float(np.mean([acc[t] for t in tasks]))
    return R


def average_accuracy(R) -> float:
    """ACC = mean_j R[T-1, j] (accuracy on all tasks after the last stage)."""
    R = _check(R)
    return float(R[-1].mean())


def backward_transfer(R) -> float:
    """BWT = 1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j]); negative = forgetting. 0 for T = 1."""
    R = _check(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def forward_transfer(R, baseline) -> float:
    """FWT = 1/(T-1) * sum_{j>=1} (R[j-1, j] - b_j), ``baseline`` b = accuracy of the untrained model, shape (T,)."""
    R = _check(R)
    b = np.asarray(baseline, dtype=float)
    T = R.shape[0]
    if b.shape != (T,):
        raise ValueError(f"baseline must have shape ({T},), got {b.shape}")
    if T == 1:
        return 0.0
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def forgetting(R) -> float:
    """Chaudhry et al. (2018): mean over j < T-1 of max_{l<T-1} R[l, j] - R[T-1, j]. 0 for T = 1."""
    R = _check(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[:T - 1, j].max() - R[T - 1, j] for j in range(T - 1)]))
