"""Tables and headline numbers from the episode records of :func:`~epi_utils.acd.training.run_study`.

Aggregation: per (method, setting, dataset, seed) the mean over test episodes (with a Student-t
95% interval over episodes); over seeds the mean of those per-seed means with a percentile
bootstrap 95% interval over seeds (``epi_utils.stats``). With 3 seeds the seed interval is
coarse; the episode interval is also reported.

Paper figures: Hu et al. (2021), Table of results on FewAsp(single), FewAsp(multi), FewAsp. The
numbers could not be verified from any source reachable while this was written, so
:data:`PAPER_REPORTED` is empty and the notebook prints "unknown" beside every setting.
Fill it only from the paper itself (``{dataset: {method: {setting: {"auc": x, "macro_f1": y}}}}``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from epi_utils.stats import bootstrap_ci, t_ci

PAPER_REPORTED: dict = {}

KEYS = ("method", "setting", "dataset")


def per_seed(episodes: pd.DataFrame) -> pd.DataFrame:
    """Mean AUC / macro-F1 over episodes for each (method, setting, dataset, seed) plus the
    episode-level t interval: columns ``auc, auc_lo, auc_hi, macro_f1, macro_f1_lo, macro_f1_hi, n_episodes``."""
    out = []
    for key, g in episodes.groupby([*KEYS, "seed", "train_dataset"], sort=True):
        row = dict(zip([*KEYS, "seed", "train_dataset"], key))
        for m in ("auc", "macro_f1"):
            lo, hi = t_ci(g[m].to_numpy())
            row.update({m: float(g[m].mean()), f"{m}_lo": lo, f"{m}_hi": hi})
        row["n_episodes"] = len(g)
        out.append(row)
    return pd.DataFrame(out)


def over_seeds(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds with bootstrap 95% interval: columns ``auc, auc_ci95, macro_f1, macro_f1_ci95, n_seeds``."""
    out = []
    for key, g in seed_table.groupby([*KEYS, "train_dataset"], sort=True):
        row = dict(zip([*KEYS, "train_dataset"], key))
        for m in ("auc", "macro_f1"):
            vals = g[m].to_numpy()
            row[m] = float(vals.mean())
            row[f"{m}_ci95"] = list(bootstrap_ci(vals))
        row["n_seeds"] = len(g)
        row["n_episodes"] = int(g["n_episodes"].iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def results_table(summary: pd.DataFrame, *, dataset: str, digits: int = 3) -> pd.DataFrame:
    """Wide table for one dataset: rows = method, columns = setting x {AUC, macro-F1} as
    ``"mean [lo, hi]"`` strings, plus the paper's figures where :data:`PAPER_REPORTED` has them."""
    sub = summary[summary.dataset == dataset]
    cells = {}
    for _, r in sub.iterrows():
        for m, label in (("auc", "AUC"), ("macro_f1", "macro-F1")):
            lo, hi = r[f"{m}_ci95"]
            cells.setdefault(r.method, {})[(r.setting, label)] = f"{r[m]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            paper = PAPER_REPORTED.get(dataset, {}).get(r.method, {}).get(r.setting, {}).get(m)
            cells[r.method][(r.setting, f"paper {label}")] = "unknown" if paper is None else f"{paper:.{digits}f}"
    table = pd.DataFrame(cells).T
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.sort_index(axis=1, level=0, sort_remaining=False)


def headline_metrics(summary: pd.DataFrame, *, dataset: str = "FewAsp(single)") -> dict:
    """``{method: {setting: {"auc", "auc_ci95", "macro_f1", "macro_f1_ci95", "n_seeds"}}}`` for ``dataset``."""
    out: dict = {}
    for _, r in summary[summary.dataset == dataset].iterrows():
        out.setdefault(r.method, {})[r.setting] = {
            "auc": r.auc, "auc_ci95": list(r.auc_ci95), "macro_f1": r.macro_f1,
            "macro_f1_ci95": list(r.macro_f1_ci95), "n_seeds": int(r.n_seeds), "n_episodes": int(r.n_episodes)}
    return out


def policy_vs_static(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, dataset): macro-F1 of policy minus static threshold, mean over seeds with a
    bootstrap interval, and how many seeds the policy wins."""
    piv = seed_table.pivot_table(index=["setting", "dataset", "seed"], columns="method", values="macro_f1")
    diff = (piv["proto_awatt_policy"] - piv["proto_awatt_static"]).rename("diff").reset_index()
    rows = []
    for (setting, dataset), g in diff.groupby(["setting", "dataset"]):
        lo, hi = bootstrap_ci(g["diff"].to_numpy())
        rows.append({"setting": setting, "dataset": dataset, "f1_policy_minus_static": float(g["diff"].mean()),
                     "ci95": [lo, hi], "policy_wins": int((g["diff"] > 0).sum()), "n_seeds": len(g)})
    return pd.DataFrame(rows)


def per_class_f1(per_class: pd.DataFrame, *, method: str, dataset: str) -> pd.DataFrame:
    """F1 of each test class pooled over settings, seeds and episodes: ``class, f1, tp, fp, fn``."""
    g = per_class[(per_class.method == method) & (per_class.dataset == dataset)].groupby("class")[["tp", "fp", "fn"]].sum()
    den = 2 * g.tp + g.fp + g.fn
    g["f1"] = np.where(den > 0, 2 * g.tp / den.where(den > 0, 1), 0.0)
    return g.reset_index().sort_values("f1")
