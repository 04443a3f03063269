"""Recovery rates of mitigations and their summary over seeds.

Recovery rate of an intervention for a cause (ILP study, 2026): among the samples that were
unlearned *before* the intervention and attributed to that cause, the share that is learned
*after* it. Each targeted fix is compared with a compute-matched control (the same number of
extra optimizer steps on randomly chosen training data), so the difference is the effect of the
targeting, not of more training.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


class RecoveryInputError(ValueError):
    """Bad input to a recovery computation."""


def recovery_rate(unlearned_before: Iterable[str], correct_after: Mapping[str, bool] | pd.Series) -> float:
    """Share of ``unlearned_before`` ids whose ``correct_after`` is True.

    Example: before = {a, b, c, d}, after = {a: True, b: False, c: True, d: False} -> 0.5.
    Raises ``RecoveryInputError`` when ``unlearned_before`` is empty (the rate is undefined) or
    when an id has no after-result.
    """
    ids = list(dict.fromkeys(unlearned_before))
    if not ids:
        raise RecoveryInputError("recovery_rate: the set of unlearned samples is empty, the rate is undefined")
    after = correct_after if isinstance(correct_after, pd.Series) else pd.Series(dict(correct_after), dtype=object)
    missing = [i for i in ids if i not in after.index]
    if missing:
        raise RecoveryInputError(f"recovery_rate: {len(missing)} unlearned sample(s) have no result after the "
                                 f"intervention, e.g. {missing[:3]}")
    return float(np.mean([bool(after[i]) for i in ids]))


def recovery_row(*, seed: int, cause: str, arm: str, unlearned_before: Sequence[str],
                 correct_after: Mapping[str, bool] | pd.Series, heldout_before: float | None = None,
                 heldout_after: float | None = None) -> dict:
    """One result row: ``seed, cause, arm ("fix" | "control"), n, recovery_rate`` and, when given,
    the held-out accuracy before/after and its change. ``n = 0`` gives ``recovery_rate = NaN``."""
    if arm not in ("fix", "control"):
        raise RecoveryInputError(f"arm must be 'fix' or 'control', got {arm!r}")
    n = len(set(unlearned_before))
    rate = recovery_rate(unlearned_before, correct_after) if n else float("nan")
    row = {"seed": seed, "cause": cause, "arm": arm, "n": n, "recovery_rate": rate}
    if heldout_before is not None and heldout_after is not None:
        row.update(heldout_before=heldout_before, heldout_after=heldout_after,
                   heldout_delta=heldout_after - heldout_before)
    return row
