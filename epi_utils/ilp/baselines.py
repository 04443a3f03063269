"""Baselines of the diagnosis, scored on the same unlearned samples as the cascade (issue 28).

- :func:`rules_baseline` -- no model at all: the SFT data's duplicate prompts, the sample's stage
  and its task. Duplicates with other targets -> ``inconsistency``; a prompt retrained later with
  another target, or a sample of an earlier stage -> ``forgetting``; a fact-asking task ->
  ``missing_knowledge`` (without the base model a missing fact and a conflicting one look alike);
  anything else -> ``rare_complex``.
- :func:`cascade_without_probe` -- the rule cascade (:func:`epi_utils.ilp.diagnosis.diagnose`) with
  the knowledge probe's columns removed, so that conflict and missing knowledge can never fire: what
  the base-model probe adds is the difference to the full cascade.

Both read only what a user has (no generator field); :func:`baseline_scores` scores them and the
cascade per world against the validation truth, from a run's saved per-sample tables (nothing is
retrained), and :func:`baseline_table` puts their macro-F1 with intervals over worlds side by side.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import diagnosis as dg
from epi_utils.ilp.diagnosis import CAUSES
from epi_utils.ilp.records import INFERRED, SeedRecord
from epi_utils.workbench import stats

#: tasks whose prompts ask for a fact of the world (the knowledge causes can only hit these)
FACT_TASKS = ("fact_qa",)
METHODS = ("cascade", "cascade_without_probe", "rules_baseline")
UNIT = "worlds"


def rules_baseline(table: pd.DataFrame, *, fact_tasks: Sequence[str] = FACT_TASKS) -> pd.Series:
    """The no-model diagnosis of every row of ``table`` (module docstring), as a Series of causes.

    Reads ``incons_flag``, ``overwrite_later`` (optional), ``stage`` and ``task``; the last stage is
    the largest ``stage`` in ``table``. Example: a duplicate -> inconsistency; a stage-0 sample when
    there are two stages -> forgetting; a last-stage fact question -> missing_knowledge; a
    last-stage reversal -> rare_complex."""
    for col in ("incons_flag", "stage", "task"):
        if col not in table.columns:
            raise dg.DiagnosisInputError(f"rules_baseline: the table has no {col!r} column")
    out = pd.Series("rare_complex", index=table.index, dtype=object, name="rules_baseline")
    out[table["task"].isin(list(fact_tasks))] = "missing_knowledge"
    earlier = table["stage"].astype(int) < int(table["stage"].max())
    overwritten = table["overwrite_later"].fillna(False).astype(bool) if "overwrite_later" in table else False
    out[earlier | overwritten] = "forgetting"
    out[table["incons_flag"].fillna(False).astype(bool)] = "inconsistency"
    return out


def cascade_without_probe(table: pd.DataFrame, *, thresholds: dg.CascadeThresholds | None = None) -> pd.Series:
    """The cascade's diagnosis of every row of ``table`` with the ``probe_*`` columns removed."""
    if table.empty:
        raise dg.DiagnosisInputError("cascade_without_probe: the table is empty")
    blind = table.drop(columns=[c for c in table.columns if c.startswith("probe_")])
    return dg.diagnose(blind, thresholds=thresholds, only_unlearned=False)["diagnosis"].rename("cascade_without_probe")


def baseline_scores(records: Sequence[SeedRecord], *, thresholds: dg.CascadeThresholds | None = None) -> pd.DataFrame:
    """Per world and method (:data:`METHODS`): macro-F1 over the five causes and over the inferred
    ones, on that world's unlearned samples scored against ``truth``. Columns ``seed, method,
    macro_f1, macro_f1_inferred``."""
    rows = []
    for r in records:
        unl = r.table[~r.table["learned"].astype(bool)]
        if unl.empty:
            continue
        diags = {"cascade": unl["diagnosis"], "cascade_without_probe": cascade_without_probe(unl, thresholds=thresholds),
                 "rules_baseline": rules_baseline(unl)}
        for method, diag in diags.items():
            scores = dg.per_cause_scores(dg.confusion(unl["truth"], diag))
            rows.append({"seed": r.seed, "method": method,
                         "macro_f1": float(np.nanmean(scores.loc[list(CAUSES), "f1"])),
                         "macro_f1_inferred": float(np.nanmean(scores.loc[list(INFERRED), "f1"]))})
    return pd.DataFrame(rows, columns=["seed", "method", "macro_f1", "macro_f1_inferred"])


def baseline_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Macro-F1 (all causes, inferred causes) per method with t-intervals over worlds, and the
    cascade's paired advantage over each baseline (``diff``, ``diff_low``, ``diff_high``)."""
    table = stats.interval_table(scores, by=["method"], columns=["macro_f1", "macro_f1_inferred"], unit=UNIT,
                                 unit_column="seed").set_index("method")
    cascade = dict(zip(scores.loc[scores["method"] == "cascade", "seed"],
                       scores.loc[scores["method"] == "cascade", "macro_f1"]))
    for method in table.index:
        other = dict(zip(scores.loc[scores["method"] == method, "seed"],
                         scores.loc[scores["method"] == method, "macro_f1"]))
        cmp = stats.compare(cascade, other, unit=UNIT, metric="macro-F1", a_name="cascade", b_name=method)
        table.loc[method, ["diff", "diff_low", "diff_high"]] = [cmp.diff.mean, cmp.diff.low, cmp.diff.high]
    return table
