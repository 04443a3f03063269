"""Tables and headline numbers from the episode records of :func:`~epi_utils.acd.training.run_study`.

Aggregation: per (method, setting, dataset, seed) the mean over test episodes (with a Student-t
95% interval over episodes); over seeds the mean of those per-seed means with a percentile
bootstrap 95% interval over seeds (``epi_utils.workbench.stats``). With 3 seeds the seed interval is
coarse; the episode interval is also reported.

Paper figures: Hu et al. (2021), Table of results on FewAsp(single), FewAsp(multi), FewAsp. The
numbers could not be verified from any source reachable while this was written, so
:data:`PAPER_REPORTED` is empty and the notebook prints "unknown" beside every setting.
Fill it only from the paper itself (``{dataset: {method: {setting: {"auc": x, "macro_f1": y}}}}``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from epi_utils.workbench.stats import bootstrap_ci, t_ci

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
    """Table for one dataset: rows = (setting, method); columns AUC and macro-F1 as
    ``"mean [lo, hi]"`` strings, and the paper's figures where :data:`PAPER_REPORTED` has them
    (``"unknown"`` otherwise)."""
    rows = []
    for _, r in summary[summary.dataset == dataset].iterrows():
        row = {"setting": r.setting, "method": r.method}
        for m, label in (("auc", "AUC"), ("macro_f1", "macro-F1")):
            lo, hi = r[f"{m}_ci95"]
            row[label] = f"{r[m]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            paper = PAPER_REPORTED.get(dataset, {}).get(r.method, {}).get(r.setting, {}).get(m)
            row[f"paper {label}"] = "unknown" if paper is None else f"{paper:.{digits}f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(["5way5shot", "5way10shot", "10way5shot", "10way10shot"])}
    table = table.sort_values(["setting", "method"], key=lambda c: c.map(order).fillna(99) if c.name == "setting" else c)
    return table.set_index(["setting", "method"])[["AUC", "paper AUC", "macro-F1", "paper macro-F1"]]


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


def policy_verdict(comparison: pd.DataFrame) -> str:
    """One computed sentence: does the policy threshold beat the static one (macro-F1)?"""
    n = len(comparison)
    wins = int((comparison["f1_policy_minus_static"] > 0).sum())
    sig_better = int(sum(lo > 0 for lo, _ in comparison["ci95"]))
    sig_worse = int(sum(hi < 0 for _, hi in comparison["ci95"]))
    mean = float(comparison["f1_policy_minus_static"].mean())
    if sig_better > sig_worse and sig_better > n / 2:
        verdict = "beats"
    elif sig_worse > sig_better:
        verdict = "does not beat"
    else:
        verdict = "does not clearly beat"
    note = " (one seed: the intervals are degenerate, so 'significant' means little)" if comparison["n_seeds"].max() < 2 else ""
    return (f"The policy threshold {verdict} the static threshold: its mean macro-F1 is higher in {wins} of {n} "
            f"(setting, dataset) pairs, significantly higher (seed 95% CI above 0) in {sig_better}, significantly "
            f"lower in {sig_worse}; average difference {mean:+.4f}{note}.")


def method_means(episodes: pd.DataFrame, *, columns=("auc", "macro_f1", "instance_f1")) -> pd.DataFrame:
    """Mean of each metric per (dataset, method) over all settings, seeds and episodes."""
    return episodes.groupby(["dataset", "method"])[list(columns)].mean().round(4)


def transfer_metrics(summary: pd.DataFrame) -> dict:
    """``{dataset: {method: {setting: {...}}}}`` for every dataset other than FewAsp(single),
    with ``train_dataset`` so a reader sees which are transfer results."""
    out = {}
    for ds in sorted(set(summary.dataset) - {"FewAsp(single)"}):
        block = headline_metrics(summary, dataset=ds)
        src = summary[summary.dataset == ds]["train_dataset"].iloc[0]
        out[ds] = {"train_dataset": src, "transfer": src != ds, **block}
    return out


def split_table(data) -> pd.DataFrame:
    """Classes, instances, unique sentences and label-count histogram of each loaded split."""
    rows = []
    for (ds, sp), split in sorted(data.splits.items()):
        counts = pd.Series(split.label_counts()).value_counts().sort_index()
        rows.append({"dataset": ds, "split": sp, "classes": len(split.classes), "instances": split.n_instances,
                     "sentences": len(split), "labels per sentence": " ".join(f"{k}:{v}" for k, v in counts.items())})
    return pd.DataFrame(rows)


def threshold_by_labels(thresholds: pd.DataFrame) -> pd.DataFrame:
    """Mean policy threshold and count per (dataset, true label count), plus the Spearman
    correlation of threshold and label count per dataset (negative = fewer classes pass for
    single-aspect sentences, as a per-instance threshold should)."""
    from scipy.stats import spearmanr

    tab = thresholds.groupby(["dataset", "n_labels"]).threshold.agg(["mean", "count"]).round(4)
    rho = {ds: spearmanr(g.threshold, g.n_labels).statistic if g.n_labels.nunique() > 1 else float("nan")
           for ds, g in thresholds.groupby("dataset")}
    tab["spearman_rho_dataset"] = [round(float(rho[ds]), 4) for ds, _ in tab.index]
    return tab
