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

from epi_utils.workbench import stats


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


def summarize_recovery(rows: Iterable[Mapping], *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and bootstrap CI over seeds of the recovery rate (and held-out change) per cause and
    arm. Columns: ``cause, arm, metric, mean, ci_low, ci_high, n`` (n = seeds with a defined value)."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise RecoveryInputError("summarize_recovery: no rows")
    values = [c for c in ("recovery_rate", "heldout_delta") if c in frame.columns]
    return stats.summarize_over_seeds(frame[["cause", "arm"] + values].to_dict("records"),
                                      group_keys=("cause", "arm"), value_keys=values, confidence=confidence)


def recovery_metrics(rows: Iterable[Mapping]) -> dict:
    """``metrics.json`` entries: ``recovery_rate_<cause>_<arm>`` and ``..._ci95`` (mean over
    seeds with a bootstrap CI), plus ``heldout_delta_<cause>_<arm>`` when available."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise RecoveryInputError("recovery_metrics: no rows")
    out = {}
    for (cause, arm), sub in frame.groupby(["cause", "arm"], sort=True):
        vals = sub["recovery_rate"].dropna().to_numpy(float)
        if vals.size:
            out.update(stats.with_ci(f"recovery_rate_{cause}_{arm}", vals))
        if "heldout_delta" in sub:
            hv = sub["heldout_delta"].dropna().to_numpy(float)
            if hv.size:
                out.update(stats.with_ci(f"heldout_delta_{cause}_{arm}", hv))
    return out


def paired_differences(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Per cause: mean over seeds of (fix - control) recovery with a bootstrap CI, and whether the
    CI excludes 0 (``fix_better``; never claimed from a single seed, whose CI collapses to a
    point). Seeds where either arm is undefined are dropped."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise RecoveryInputError("paired_differences: no rows")
    wide = frame.pivot_table(index=["cause", "seed"], columns="arm", values="recovery_rate", aggfunc="mean")
    out = []
    for cause, sub in wide.groupby(level="cause"):
        if not {"fix", "control"} <= set(sub.columns):
            continue
        diff = (sub["fix"] - sub["control"]).dropna().to_numpy(float)
        if not diff.size:
            continue
        lo, hi = stats.bootstrap_ci(diff)
        out.append({"cause": cause, "fix_minus_control": float(diff.mean()), "ci_low": lo, "ci_high": hi,
                    "n_seeds": int(diff.size), "fix_better": bool(lo > 0 and diff.size >= 2)})
    return pd.DataFrame(out)
