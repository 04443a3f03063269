"""Figures of studies 01 (importance drift) and 02 (EPI vs static isolation).

Every function takes tables produced by :mod:`epi_utils.epi.importance_snapshots` or
:mod:`epi_utils.epi.isolation_study` and returns a ``matplotlib`` figure; the notebook saves it with
:func:`epi_utils.workbench.plots.save_figure`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def plot_drift(tables: Sequence, noise=None, *, task: str = "all"):
    """Three panels over training steps: mask Jaccard with the first and the previous snapshot
    (with the two-seed noise floor), Spearman rank correlation with the first snapshot, turnover
    from the previous snapshot. ``tables``: one :func:`drift_table` per seed."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k, df in enumerate(tables):
        d = df[df["task"] == task]
        kw = dict(alpha=0.9 if k == 0 else 0.5)
        axes[0].plot(d["step"], d["jaccard_first"], color="C0", label="vs first" if k == 0 else None, **kw)
        axes[0].plot(d["step"], d["jaccard_prev"], color="C1", label="vs previous" if k == 0 else None, **kw)
        axes[1].plot(d["step"], d["spearman_first"], color="C2", **kw)
        axes[2].plot(d["step"], d["turnover_prev"], color="C3", **kw)
    if noise is not None and len(noise):
        axes[0].plot(noise["step"], noise["jaccard"], color="k", ls="--", label="two seeds, same step")
        axes[1].plot(noise["step"], noise["spearman"], color="k", ls="--")
    axes[0].set(xlabel="step", ylabel="Jaccard of top-share masks", ylim=(0, 1.02))
    axes[1].set(xlabel="step", ylabel="Spearman vs first snapshot")
    axes[2].set(xlabel="step", ylabel="turnover vs previous snapshot")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_layer_heatmap(matrix, *, title: str = "share of each block in the mask"):
    """Heatmap of a :func:`layer_share_matrix` (rows: blocks, columns: steps)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(matrix) + 1.5))
    im = ax.imshow(matrix.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(matrix)), [str(i) for i in matrix.index])
    step_labels = list(matrix.columns)
    ticks = np.linspace(0, len(step_labels) - 1, min(10, len(step_labels))).astype(int)
    ax.set_xticks(ticks, [str(step_labels[i]) for i in ticks])
    ax.set(xlabel="step", ylabel="block", title=title)
    fig.colorbar(im, ax=ax, label="share of the block's parameters in the mask")
    fig.tight_layout()
    return fig


def plot_policy_metrics(head: Mapping[str, Mapping[str, float]], *,
                        keys: Sequence[str] = ("interference", "heldout_acc", "seq_acc", "seq_bwt", "seq_forgetting")):
    """One panel per metric: mean and 95% CI per policy (``headline`` output)."""
    plt = _plt()
    keys = [k for k in keys if any(k in v for v in head.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.6), squeeze=False)
    pols = list(head)
    for ax, k in zip(axes[0], keys):
        m = np.array([head[p].get(k, np.nan) for p in pols])
        ci = np.array([head[p].get(f"{k}_ci95", [np.nan, np.nan]) for p in pols], dtype=float)
        err = np.vstack([m - ci[:, 0], ci[:, 1] - m])
        colors = ["C3" if p == "epi" else "C0" for p in pols]
        ax.bar(range(len(pols)), m, yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(pols)), pols, rotation=45, ha="right", fontsize=8)
        ax.set_title(k, fontsize=10)
        ax.axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    return fig


def plot_epi_turnover(rows: Sequence[dict]):
    """EPI's mask turnover (mean over tasks) at each mask update, one line per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in rows:
        hist = [h for h in r["mask_history"] if np.isfinite(h.get("turnover", np.nan))]
        if hist:
            ax.plot([h["step"] for h in hist], [h["turnover"] for h in hist], marker="o", ms=3,
                    label=f"{r['schedule']} seed {r['seed']}")
    ax.set(xlabel="step", ylabel="turnover of the critical sets", title="EPI mask turnover", ylim=(0, None))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_ablation(df, *, metric: str | Sequence[str] = "heldout_acc"):
    """EPI ablations: each of ``metric`` (one row of panels per metric) over ``mask_update_interval``
    and ``isolation_ratio`` (columns); mean over seeds with the min-max range. Rows of ``df`` where
    a metric is NaN (e.g. sequential-only metrics of mixed runs) are skipped for that metric."""
    plt = _plt()
    metrics = [metric] if isinstance(metric, str) else list(metric)
    groups = list(df["ablation"].unique()) if len(df) else []
    nc = max(1, len(groups))
    fig, axes = plt.subplots(len(metrics), nc, figsize=(4.2 * nc, 3.0 * len(metrics)), squeeze=False)
    for i, m in enumerate(metrics):
        for ax, g in zip(axes[i], groups):
            d = df[(df["ablation"] == g)] if m in df else df.iloc[0:0]
            d = d[d[m].notna()] if len(d) else d
            if not len(d):
                ax.set_visible(False)
                continue
            d = d.groupby("value")[m].agg(["mean", "min", "max"]).reset_index()
            ax.errorbar(d["value"], d["mean"], yerr=[d["mean"] - d["min"], d["max"] - d["mean"]], marker="o",
                        capsize=3)
            ax.set(xlabel=g, ylabel=m)
    fig.tight_layout()
    return fig
