"""Figures of study 01. Each function takes frames of a :class:`~epi_utils.drift.study.Result`
(``frames()["pairs"]``, ``frames()["ablations"]``) and returns a
``matplotlib`` figure; nothing here writes a file (the notebook does, through ``workbench.plots``).
Bands and error bars are t-intervals over runs (the unit is written in each title).
"""
from __future__ import annotations

import numpy as np

from epi_utils.workbench import plots
from epi_utils.workbench.stats import interval_table


def _plt():
    import matplotlib.pyplot as plt

    return plt


def drift_over_time(pairs, *, first: int, share: float, unit: str, task: str = "all"):
    """Top row: D(first, s) against checkpoint s, one line per estimator, one panel per regime.
    Bottom row: the reliability R_s = J(A_s, B_s) of each checkpoint (what D is normalised by)."""
    plt = _plt()
    sub = pairs[(pairs["kind"] == "drift") & (pairs["t"] == first) & (pairs["task"] == task)
                & (pairs["share"] == share) & (pairs["group"] == "all")]
    tab = interval_table(sub, by=["regime", "estimator", "s"], columns=("d", "r_s"), unit=unit)
    regimes = list(dict.fromkeys(sub["regime"]))
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.2 * len(regimes), 6.2), squeeze=False, sharex="col")
    for j, regime in enumerate(regimes):
        for k, est in enumerate(sorted(set(tab["estimator"]))):
            d = tab[(tab["regime"] == regime) & (tab["estimator"] == est)].sort_values("s")
            for i, col in enumerate(("d", "r_s")):
                ax = axes[i, j]
                ax.plot(d["s"], d[col], marker="o", color=f"C{k}", label=est)
                ax.fill_between(d["s"], d[f"{col}_low"], d[f"{col}_high"], color=f"C{k}", alpha=0.2)
        nod = pairs[(pairs["kind"] == "no_drift") & (pairs["regime"] == regime) & (pairs["task"] == task)
                    & (pairs["share"] == share) & (pairs["group"] == "all") & (pairs["estimator"] == "taylor")]
        if len(nod):
            axes[0, j].axhline(float(nod["d"].mean()), color="k", ls="--", lw=1, label="no-drift control (taylor)")
        axes[0, j].set(title=f"{regime}: D(step {first}, step s)", ylabel="drift index D", ylim=(-0.1, 1.05))
        axes[0, j].axhline(0, color="k", lw=0.8)
        axes[1, j].set(xlabel="checkpoint step s", ylabel="reliability R_s", ylim=(0, 1.05))
        axes[0, j].legend(title="estimator", fontsize=8)
    fig.suptitle(f"task '{task}', top {share:.0%}; bands: 95% t-interval over {unit}", fontsize=10)
    fig.tight_layout()
    return fig


def drift_by_layer_type(pairs, *, first: int, last: int, share: float, unit: str, estimator: str = "taylor",
                        task: str = "all"):
    """D(first, last) per layer type (and all parameters), one bar group per regime, with t-intervals."""
    plt = _plt()
    sub = pairs[(pairs["kind"] == "drift") & (pairs["t"] == first) & (pairs["s"] == last) & (pairs["task"] == task)
                & (pairs["share"] == share) & (pairs["estimator"] == estimator)]
    tab = interval_table(sub, by=["regime", "group"], columns=("d",), unit=unit)
    regimes = list(dict.fromkeys(sub["regime"]))
    groups = ["all"] + sorted(g for g in set(tab["group"]) if g != "all")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 3.8))
    width = 0.8 / len(regimes)
    for k, regime in enumerate(regimes):
        d = tab[tab["regime"] == regime].set_index("group").reindex(groups)
        x = np.arange(len(groups)) + (k - (len(regimes) - 1) / 2) * width
        err = np.vstack([d["d"] - d["d_low"], d["d_high"] - d["d"]])
        ax.bar(x, d["d"], width, yerr=err, capsize=3, color=f"C{k}", label=regime)
    ax.set_xticks(np.arange(len(groups)), labels=groups)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="layer type", ylabel=f"D(step {first}, step {last})",
           title=f"{estimator}, task '{task}', top {share:.0%}\n95% t-interval over {unit}")
    ax.legend(title="regime", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def drift_matrix(pairs, *, share: float, estimator: str = "taylor", task: str = "all"):
    """Heatmaps of D(t, s) (mean over runs) for every pair of checkpoints t < s, one panel per regime."""
    plt = _plt()
    sub = pairs[(pairs["kind"] == "drift") & (pairs["task"] == task) & (pairs["share"] == share)
                & (pairs["estimator"] == estimator) & (pairs["group"] == "all")]
    regimes = list(dict.fromkeys(sub["regime"]))
    steps = sorted(set(sub["t"]) | set(sub["s"]))
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.2 * len(regimes), 4.2), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        mat = np.full((len(steps), len(steps)), np.nan)
        for (t, s), v in sub[sub["regime"] == regime].groupby(["t", "s"])["d"].mean().items():
            mat[steps.index(t), steps.index(s)] = v
        plots.matrix(ax, mat, xlabels=[str(s) for s in steps], ylabels=[str(t) for t in steps],
                     cbar_label="drift index D (mean over runs)", cmap="magma", vmin=0, vmax=1, fmt=".2f")
        ax.set(xlabel="later checkpoint s", ylabel="earlier checkpoint t",
               title=f"{regime}: D(t, s), {estimator}, top {share:.0%}")
    fig.tight_layout()
    return fig


def functional(ablations, *, unit: str, task: str = "all"):
    """Held-out loss increase when the step-t mask, the step-s mask or a random mask of the same size
    is ablated at the step-s weights; bars per regime with t-intervals over runs."""
    plt = _plt()
    sub = ablations[ablations["task"] == task]
    tab = interval_table(sub, by=["regime", "mask"], columns=("increase",), unit=unit)
    regimes = list(dict.fromkeys(sub["regime"]))
    masks = ["step_t", "step_s", "random"]
    t, s = int(sub["t"].iloc[0]), int(sub["s"].iloc[0])
    names = {"step_t": f"mask of step {t}", "step_s": f"mask of step {s}", "random": "random mask"}
    fig, ax = plt.subplots(figsize=(2.4 * len(regimes) + 2.5, 3.8))
    width = 0.8 / len(masks)
    for k, m in enumerate(masks):
        d = tab[tab["mask"] == m].set_index("regime").reindex(regimes)
        x = np.arange(len(regimes)) + (k - 1) * width
        err = np.vstack([d["increase"] - d["increase_low"], d["increase_high"] - d["increase"]])
        ax.bar(x, d["increase"], width, yerr=err, capsize=3, color=f"C{k}", label=names[m])
    ax.set_xticks(np.arange(len(regimes)), labels=regimes)
    ax.set(xlabel="regime (peak learning rate)", ylabel="held-out loss increase",
           title=f"ablation at step-{s} weights, task '{task}'\n95% t-interval over {unit}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig
