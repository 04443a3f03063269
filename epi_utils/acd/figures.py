"""Figures of Study 05 (each returns a matplotlib Figure; the notebook saves it with
``epi_utils.workbench.plots.save_figure``)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def threshold_vs_labels(thresholds: pd.DataFrame):
    """Policy thresholds of test queries grouped by their true number of aspects (one panel per
    dataset, boxes per label count, the tuned static thresholds as dashed lines).

    ``thresholds``: columns ``dataset, setting, n_labels, threshold, static_threshold``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    datasets = list(dict.fromkeys(thresholds["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False, sharey=True)
    for ax, ds in zip(axes[0], datasets):
        sub = thresholds[thresholds.dataset == ds]
        sns.boxplot(data=sub, x="n_labels", y="threshold", hue="setting", ax=ax, fliersize=1, linewidth=0.8)
        for i, (setting, g) in enumerate(sub.groupby("setting", sort=False)):
            ax.axhline(g["static_threshold"].mean(), ls="--", lw=0.8, color=f"C{i}")
        counts = sub.groupby("n_labels").size()
        ax.set_xticks(range(len(counts)), [f"{k}\n({v})" for k, v in counts.items()], fontsize=8)
        ax.set_title(ds)
        ax.set_xlabel("aspects in the query sentence (queries)")
        ax.set_ylabel("policy threshold (dashed: static)")
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def attention_tokens(examples: list[dict], *, max_tokens: int = 30):
    """Support-set attention weights over the words of a few support sentences (one row each)."""
    import matplotlib.pyplot as plt

    n = len(examples)
    fig, axes = plt.subplots(n, 1, figsize=(12, 1.25 * n + 0.4), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        toks, w = ex["tokens"][:max_tokens], np.asarray(ex["weights"][:max_tokens])
        ax.imshow(w[None, :], aspect="auto", cmap="Reds", vmin=0, vmax=max(w.max(), 1e-6))
        ax.set_xticks(range(len(toks)), toks, rotation=60, fontsize=8, ha="right", rotation_mode="anchor")
        ax.set_yticks([])
        ax.grid(False)
        ax.set_title(f"prototype of {ex['class']}  (sentence aspects: {', '.join(ex['aspects'])})", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def per_class_bars(table: pd.DataFrame, *, title: str):
    """Horizontal bars of per-class F1 (``table``: columns ``class, f1``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.28 * len(table) + 1.0))
    ax.barh(table["class"], table["f1"], color="C0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (pooled over settings, seeds, episodes)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def results_bars(summary: pd.DataFrame, *, dataset: str, metric: str = "macro_f1"):
    """Bars of ``metric`` per setting and method with the seed 95% interval as error bars."""
    import matplotlib.pyplot as plt

    sub = summary[summary.dataset == dataset]
    settings = list(dict.fromkeys(sub.setting))
    methods = list(dict.fromkeys(sub.method))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        g = sub[sub.method == m].set_index("setting").reindex(settings)
        ci = np.array([list(c) for c in g[f"{metric}_ci95"]])
        err = np.abs(ci.T - g[metric].to_numpy())
        ax.bar(np.arange(len(settings)) + i * width, g[metric], width, yerr=err, label=m, capsize=2)
    ax.set_xticks(np.arange(len(settings)) + width * (len(methods) - 1) / 2, settings)
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset}: {metric} (mean over seeds, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
