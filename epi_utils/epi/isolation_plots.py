"""Figures of study 01 (importance drift), until they move to ``epi_utils.epi.drift.figures``
(study 02's figures are in :mod:`epi_utils.epi.isolation_study.figures`).

Every function takes tables produced by :mod:`epi_utils.epi.importance_snapshots` and returns a
``matplotlib`` figure; the notebook saves it with :func:`epi_utils.workbench.plots.save_figure`.
"""
from __future__ import annotations

from typing import Sequence

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
