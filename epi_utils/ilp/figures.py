"""Figures of study 03; each returns a matplotlib ``Figure`` (the notebook saves it with the
workbench's plots module)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from epi_utils.ilp.diagnosis import CAUSES
from epi_utils.workbench.plots import legend_outside


def _labels(names) -> list[str]:
    return [str(c).replace("_", "\n") for c in names]


def confusion_figure(conf: pd.DataFrame, *, title: str = "Diagnosis vs truth (unlearned samples, pooled over worlds)"):
    """Row-normalised heatmap (share of each truth row) with the counts printed; colour bar."""
    import matplotlib.pyplot as plt

    mat = conf.to_numpy(dtype=float)
    rows = mat.sum(axis=1, keepdims=True)
    share = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, str(int(mat[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(mat.shape[1]), list(conf.columns), fontsize=8, rotation=30, ha="right")
    ax.set_yticks(range(mat.shape[0]), list(conf.index), fontsize=8)
    ax.set_xlabel("diagnosed (rule cascade on user-available signals)")
    ax.set_ylabel("truth")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="share of the truth row")
    fig.tight_layout()
    return fig


def scores_figure(per_cause: pd.DataFrame):
    """Precision, recall and F1 per cause with their intervals over worlds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(per_cause))
    for k, m in enumerate(("precision", "recall", "f1")):
        mean = per_cause[m].to_numpy(float)
        lo = np.nan_to_num(mean - per_cause[f"{m}_low"].to_numpy(float))
        hi = np.nan_to_num(per_cause[f"{m}_high"].to_numpy(float) - mean)
        ax.bar(x + (k - 1) * 0.27, mean, width=0.27, yerr=np.vstack([lo, hi]), capsize=3, label=m)
    ax.set_xticks(x, _labels(per_cause.index))
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("cause (truth)")
    ax.set_ylabel("score (mean over worlds)")
    ax.set_title("Diagnosis per cause (95% t-intervals over worlds)", fontsize=10)
    legend_outside(ax, where="right", fontsize=8)
    fig.tight_layout()
    return fig


def prevalence_figure(pooled: pd.DataFrame):
    """Unlearned samples per world by truth cause and by diagnosis (``none``/``unexplained`` last)."""
    import matplotlib.pyplot as plt

    unl = pooled[~pooled["learned"].astype(bool)]
    n = max(1, pooled["seed"].nunique())
    order = list(CAUSES) + ["none / unexplained"]
    truth = unl["truth"].replace({"none": order[-1]}).value_counts().reindex(order, fill_value=0) / n
    diag = unl["diagnosis"].replace({"unexplained": order[-1]}).value_counts().reindex(order, fill_value=0) / n
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    x = np.arange(len(order))
    ax.bar(x - 0.2, truth.to_numpy(), width=0.4, label="truth")
    ax.bar(x + 0.2, diag.to_numpy(), width=0.4, label="diagnosed")
    ax.set_xticks(x, _labels(order))
    ax.set_xlabel("cause")
    ax.set_ylabel("unlearned samples per world")
    ax.set_title("Prevalence of the five causes among unlearned samples", fontsize=10)
    legend_outside(ax, where="right", fontsize=8)
    fig.tight_layout()
    return fig


def mitigation_figure(table: pd.DataFrame):
    """Fix minus control recovery rate per cause, with the paired interval over worlds
    (:func:`~epi_utils.ilp.summary.mitigation_table`); a figure that says so when there is no row."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    if table.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "no mitigation results (mitigate is off, or nothing was diagnosed)", ha="center",
                va="center", fontsize=10)
        return fig
    x = np.arange(len(table))
    err = np.vstack([table["diff"] - table["diff_low"], table["diff_high"] - table["diff"]])
    ax.bar(x, table["diff"], yerr=np.nan_to_num(err), capsize=4, color="#55A868",
           label="targeted fix - compute-matched control")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, _labels(table.index))
    ax.set_xlabel("diagnosed cause (its targeted fix)")
    ax.set_ylabel("difference in recovery rate")
    ax.set_title("Mitigations (paired 95% t-intervals over worlds)", fontsize=10)
    legend_outside(ax, where="right", fontsize=8)
    fig.tight_layout()
    return fig


def dynamics_figure(pooled: pd.DataFrame):
    """Share of unlearned samples per truth cause that were never reproduced, reproduced then lost,
    or oscillating: the dynamics patterns behind each cause."""
    import matplotlib.pyplot as plt

    unl = pooled[~pooled["learned"].astype(bool)]
    order = [c for c in (*CAUSES, "none") if (unl["truth"] == c).any()]
    pats = {"never reproduced": unl["dyn_correctness"].fillna(0) == 0,
            "reproduced, then lost": unl["dyn_correctness"].fillna(0) > 0,
            "oscillating (>= 2 forgetting events)": unl["dyn_forgetting_events"].fillna(0) >= 2}
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    x = np.arange(len(order))
    for k, (name, mask) in enumerate(pats.items()):
        vals = [float(mask[unl["truth"] == c].mean()) for c in order]
        ax.bar(x + (k - 1) * 0.27, vals, width=0.27, label=name)
    ax.set_xticks(x, _labels(order))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("cause (truth)")
    ax.set_ylabel("share of unlearned samples")
    ax.set_title("Training dynamics of unlearned samples by truth cause", fontsize=10)
    legend_outside(ax, where="right", fontsize=8)
    fig.tight_layout()
    return fig


def heldout_figure(scores: pd.DataFrame):
    """Macro-F1 per method on the fitting worlds and on the held-out settings: one point per world
    or setting, the mean as a bar (:func:`epi_utils.ilp.heldout.evaluate`)."""
    import matplotlib.pyplot as plt

    from epi_utils.ilp.heldout import METHODS

    parts = [p for p in ("fitting", "held out") if not scores.empty and (scores["part"] == p).any()]
    fig, axes = plt.subplots(1, max(1, len(parts)), figsize=(5.2 * max(1, len(parts)), 4.2), sharey=True,
                             squeeze=False)
    if not parts:
        axes[0, 0].text(0.5, 0.5, "no unlearned samples", ha="center", va="center")
        axes[0, 0].set_xlabel("method")
        axes[0, 0].set_ylabel("macro-F1")
        return fig
    methods = [m for m in METHODS if m in set(scores["method"])]
    names = {"cascade": "cascade\nadaptive", "cascade_fixed_cuts": "cascade\nfixed cuts", "forest": "random\nforest",
             "cascade_without_probe": "cascade\nno probe", "rules_baseline": "no-model\nrules"}
    for ax, part in zip(axes[0], parts):
        g = scores[scores["part"] == part]
        for i, m in enumerate(methods):
            v = g.loc[g["method"] == m, "macro_f1"].to_numpy(float)
            ax.bar(i, np.nanmean(v) if len(v) else 0.0, color="0.85", edgecolor="0.4", width=0.6)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.full(len(v), i),
                       v, s=14, color="C0", zorder=3)
        ax.set_xticks(range(len(methods)), [names.get(m, m) for m in methods], fontsize=8)
        unit = "settings" if part == "held out" else "worlds"
        ax.set_title(f"{part}: {g['unit'].nunique()} {unit}", fontsize=10)
        ax.set_xlabel("diagnosis method")
        ax.set_ylim(0, 1.05)
    axes[0, 0].set_ylabel("macro-F1, five causes")
    fig.tight_layout()
    return fig
