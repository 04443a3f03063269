"""The explorer table of study 03: unlearned samples with the evidence that decided their diagnosis."""
from __future__ import annotations

import pandas as pd

EXPLORER_COLUMNS = ("seed", "task", "stage", "prompt", "response", "diagnosis", "cascade", "evidence", "truth",
                    "probe_category", "probe_base_answer", "dyn_correctness", "dyn_max_in_stage",
                    "rarity_group_size")


def explorer_table(pooled: pd.DataFrame, *, seed: int | None = None, limit: int = 40, per_cause: int = 0) -> pd.DataFrame:
    """Unlearned samples of one world (default: the first) ordered by diagnosis then task; with
    ``per_cause > 0`` at most that many rows per diagnosis; at most ``limit`` rows."""
    unl = pooled[~pooled["learned"].astype(bool)]
    if unl.empty:
        return pd.DataFrame(columns=EXPLORER_COLUMNS)
    seed = unl["seed"].min() if seed is None else seed
    sub = unl[unl["seed"] == seed]
    cols = [c for c in EXPLORER_COLUMNS if c in sub.columns]
    sub = sub[cols].sort_values(["diagnosis", "task"], kind="stable")
    if per_cause > 0:
        sub = sub.groupby("diagnosis", sort=False).head(per_cause)
    return sub.head(limit)
