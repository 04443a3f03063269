"""Training length from the dev score (issue 29): stop at a plateau, and say when a selection is
not interpretable.

The study trains the encoder (:func:`~.frontend.train_encoder`, dev mention F1) and every decoder
(:func:`~.training.train_decoder`, the dev selection key) with :class:`Plateau`, and marks a
comparison whose decoders :func:`selection_problems` flags as not interpretable
(:func:`~.summary.comparison_table`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Plateau:
    """Early stopping on a dev score that is higher when better.

    Call :meth:`update` after every dev check; it returns True when training should stop: after
    ``patience`` checks without an improvement of more than ``min_delta`` over the best score, or at
    ``max_checks``. ``best_check`` (1-based) is the check whose model is kept.
    """

    patience: int
    max_checks: int | None = None
    min_delta: float = 0.0
    best: float | tuple = -math.inf
    best_check: int = 0
    checks: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.max_checks is not None and self.max_checks < 1:
            raise ValueError(f"max_checks must be >= 1 or None, got {self.max_checks}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")

    def update(self, score: float | tuple) -> bool:
        """Record one dev check's ``score``; True when training should stop. A tuple score (e.g.
        :func:`~.training.selection_key`) is compared lexicographically, ``min_delta`` applying to
        its first element: it improves when its first element gains more than ``min_delta``, or
        stays within ``min_delta`` of the best and the rest of the tuple is larger."""
        values = score if isinstance(score, tuple) else (score,)
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"dev score must be finite, got {score}")
        self.checks += 1
        if self._improves(score):
            self.best, self.best_check = score, self.checks
        return self.plateaued or self.at_maximum

    def _improves(self, score) -> bool:
        if not isinstance(score, tuple):
            return score > self.best + self.min_delta
        if self.best_check == 0:
            return True
        first, best_first = score[0], self.best[0]
        if first > best_first + self.min_delta:
            return True
        return abs(first - best_first) <= self.min_delta and score[1:] > self.best[1:]

    @property
    def plateaued(self) -> bool:
        """``patience`` checks in a row without improvement."""
        return self.checks - self.best_check >= self.patience

    @property
    def at_maximum(self) -> bool:
        return self.max_checks is not None and self.checks >= self.max_checks

    @property
    def still_improving(self) -> bool:
        """Stopped by the maximum while the kept model is the last check's: longer training might pay."""
        return self.at_maximum and self.best_check == self.checks


def epoch_scale(*, n_items: int, batch: int, epoch_steps: int) -> int:
    """How many passes over the data make one scheduled epoch: ``ceil(epoch_steps / ceil(n_items /
    batch))``, at least 1.

    A schedule written as epochs (the most epochs, the patience, the dev-check period) is a different
    amount of training on every data set: 6 encoder epochs are 750 optimiser steps on ChFinAnn's 997
    training documents (batch 8) but 162 on a data set of 210, and a plateau judged every epoch there
    is judged on a fifth of the updates. Counting a small data set's epochs in groups of at least
    ``epoch_steps`` steps keeps the schedule's meaning in updates; a large data set (one epoch already
    ``epoch_steps`` steps or more) is unchanged, and ``epoch_steps = 0`` turns the scaling off.
    E.g. ``epoch_scale(n_items=210, batch=8, epoch_steps=125) == 5`` (27 batches per pass).
    """
    if min(n_items, batch) < 1 or epoch_steps < 0:
        raise ValueError(f"need n_items, batch >= 1 and epoch_steps >= 0; got {n_items}, {batch}, {epoch_steps}")
    return max(1, math.ceil(epoch_steps / math.ceil(n_items / batch)))


def selection_problems(*, best_epoch: int, last_epoch: int, max_epochs: int, dev_f1: float,
                       min_dev_f1: float = 0.05) -> list[str]:
    """Why a trained model's comparison is not interpretable (empty when it is): the kept epoch is the
    last one and the maximum was reached (still improving), or its dev F1 is below ``min_dev_f1``
    (it barely learned)."""
    problems = []
    if best_epoch == last_epoch and last_epoch >= max_epochs:
        problems.append(f"kept the last epoch ({last_epoch} of at most {max_epochs}): still improving")
    if dev_f1 < min_dev_f1:
        problems.append(f"dev F1 {dev_f1:.3f} < {min_dev_f1}: barely learned")
    return problems
