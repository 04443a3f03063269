"""Detection of unlearned training samples and of the subsets that aggregate accuracy hides.

A training sample is *learned* when greedy decoding of the fine-tuned model reproduces its SFT
target exactly (:func:`epi_utils.lm.evaluate.exact_match`, as the study measures it). The ILP
study (2026) stresses that aggregate accuracy can improve while persistent unlearned subsets remain: :func:`subset_gaps` reports the
gap between the aggregate and the worst subsets.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd


class DetectionInputError(ValueError):
    """Bad input to detection (mismatched lengths, unknown column)."""


def unlearned_rates(table: pd.DataFrame, *, by: str | None = "task", learned_col: str = "learned") -> pd.DataFrame:
    """Unlearned rate overall (row ``"all"``) and per ``by`` group.

    Columns: ``n``, ``n_unlearned``, ``unlearned_rate``, ``accuracy`` (= 1 - rate).
    Example: learned = [T, F, T, T] in tasks [a, a, b, b] -> a: 0.5, b: 0.0, all: 0.25.
    """
    if learned_col not in table.columns:
        raise DetectionInputError(f"column {learned_col!r} not in the table; columns: {sorted(table.columns)}")
    if table.empty:
        raise DetectionInputError("unlearned_rates: empty table")
    unl = ~table[learned_col].astype(bool)
    rows = [{"group": "all", "n": int(len(unl)), "n_unlearned": int(unl.sum())}]
    if by is not None:
        if by not in table.columns:
            raise DetectionInputError(f"column {by!r} not in the table; columns: {sorted(table.columns)}")
        for key, sub in unl.groupby(table[by], sort=True):
            rows.append({"group": str(key), "n": int(len(sub)), "n_unlearned": int(sub.sum())})
    frame = pd.DataFrame(rows).set_index("group")
    frame["unlearned_rate"] = frame["n_unlearned"] / frame["n"]
    frame["accuracy"] = 1.0 - frame["unlearned_rate"]
    return frame


def subset_gaps(table: pd.DataFrame, *, by: Sequence[str] = ("task", "template_id"), learned_col: str = "learned",
                min_size: int = 3, worst_k: int = 5) -> pd.DataFrame:
    """Aggregate accuracy vs the worst subsets.

    For each column in ``by``, the accuracy of every group with at least ``min_size`` samples;
    returns the ``worst_k`` lowest groups per column with ``gap = aggregate - subset accuracy``.
    Columns: ``by, group, n, accuracy, aggregate, gap``.
    """
    if learned_col not in table.columns:
        raise DetectionInputError(f"column {learned_col!r} not in the table")
    learned = table[learned_col].astype(bool)
    agg = float(learned.mean())
    out = []
    for col in by:
        if col not in table.columns:
            raise DetectionInputError(f"subset column {col!r} not in the table; columns: {sorted(table.columns)}")
        grp = learned.groupby(table[col]).agg(["mean", "size"])
        grp = grp[grp["size"] >= min_size].sort_values("mean", kind="stable").head(worst_k)
        for key, r in grp.iterrows():
            out.append({"by": col, "group": str(key), "n": int(r["size"]), "accuracy": float(r["mean"]),
                        "aggregate": agg, "gap": agg - float(r["mean"])})
    return pd.DataFrame(out, columns=["by", "group", "n", "accuracy", "aggregate", "gap"])
