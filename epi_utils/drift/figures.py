"""Figures of study 01. Each function takes frames of a :class:`~epi_utils.drift.study.Result`
(``frames()["pairs"]``, ``frames()["ablations"]``) or summary tables and returns a ``matplotlib``
figure; nothing here writes a file (the notebook does, through ``workbench.plots``). Bands and error
bars are t-intervals over pretrained models (SFT seeds averaged within a model first); the unit is
written in each title. An arm is one regime x schedule.
"""
from __future__ import annotations

import numpy as np

from epi_utils.drift.summary import model_means, model_table
from epi_utils.workbench import plots

ARM = ["regime", "schedule"]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _arms(frame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["regime"], frame["schedule"])))


def drift_over_time(pairs, *, first: int, share: float, unit: str, task: str = "all"):
    """Per arm (columns): D(first, s) against checkpoint s, one line per estimator, with the level the
    uncorrected D reads at chance overlap (dotted) and the no-drift control (dashed); the
    chance-corrected D* (1 = chance); the reliability R_s of each checkpoint's measurement."""
    plt = _plt()
    sub = pairs[(pairs["kind"] == "drift") & (pairs["t"] == first) & (pairs["task"] == task)
                & (pairs["share"] == share) & (pairs["group"] == "all")]
    tab = model_table(sub, by=[*ARM, "estimator", "s"], columns=("d", "d_star", "r_s", "d_at_chance"), unit=unit)
    arms = _arms(sub)
    fig, axes = plt.subplots(3, len(arms), figsize=(4.2 * len(arms) + 1.8, 8.4), squeeze=False, sharex="col")
    for j, (regime, sch) in enumerate(arms):
        at = tab[(tab["regime"] == regime) & (tab["schedule"] == sch)]
        for k, est in enumerate(sorted(set(at["estimator"]))):
            d = at[at["estimator"] == est].sort_values("s")
            for i, col in enumerate(("d", "d_star", "r_s")):
                ax = axes[i, j]
                ax.plot(d["s"], d[col], marker="o", color=f"C{k}", label=est)
                ax.fill_between(d["s"], d[f"{col}_low"], d[f"{col}_high"], color=f"C{k}", alpha=0.2)
        taylor = at[at["estimator"] == "taylor"]
        if len(taylor):
            axes[0, j].axhline(float(np.nanmean(taylor["d_at_chance"])), color="0.4", ls=":", lw=1.2,
                               label="chance level (taylor)")
        nod = pairs[(pairs["kind"] == "no_drift") & (pairs["regime"] == regime) & (pairs["schedule"] == sch)
                    & (pairs["task"] == task) & (pairs["share"] == share) & (pairs["group"] == "all")
                    & (pairs["estimator"] == "taylor")]
        if len(nod):
            axes[0, j].axhline(float(nod["d"].mean()), color="k", ls="--", lw=1, label="no-drift control (taylor)")
        axes[0, j].set(title=f"{regime}, {sch} lr", ylim=(-0.15, 1.1))
        axes[1, j].axhline(1.0, color="0.4", ls=":", lw=1.2, label="chance")
        axes[1, j].set(ylim=(-0.15, 1.25))
        axes[2, j].set(xlabel="checkpoint step s", ylim=(0, 1.05))
        for ax in axes[:, j]:
            ax.axhline(0, color="k", lw=0.6)
    for j in range(len(arms)):
        axes[0, j].set_ylabel(f"D(step {first}, step s)")
        axes[1, j].set_ylabel("chance-corrected D*")
        axes[2, j].set_ylabel("reliability R_s")
    plots.legend_outside(axes[0, -1], title="estimator")
    plots.legend_outside(axes[1, -1])
    fig.suptitle(f"task '{task}', top {share:.0%}; bands: 95% t-interval over {unit}", fontsize=10)
    fig.tight_layout()
    return fig


def dose_response(points, *, unit: str, last: int, slope_text: str = ""):
    """Extra held-out loss of the step-``last`` mask over the step-t mask (y) against D(t, last) (x),
    at the step-``last`` weights; one marker series per arm (filled: the step-t masks; hollow: random
    masks of the same size in their place, the control). ``points``: :func:`summary.dose_points`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    for k, (regime, sch) in enumerate(_arms(points)):
        d = points[(points["regime"] == regime) & (points["schedule"] == sch)].sort_values("t")
        xerr = np.vstack([d["dose"] - d["dose_low"], d["dose_high"] - d["dose"]])
        for col, fill, name in (("extra", f"C{k}", f"{regime}, {sch}: step-t mask"),
                                ("extra_random", "none", f"{regime}, {sch}: random mask")):
            yerr = np.vstack([d[col] - d[f"{col}_low"], d[f"{col}_high"] - d[col]])
            ax.errorbar(d["dose"], d[col], xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="o",
                        color=f"C{k}", mfc=fill, capsize=2, lw=0.8, label=name,
                        ls="-" if col == "extra" else "none")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel=f"drift index D(step t, step {last}) of the ablated mask",
           ylabel=f"extra held-out loss of the step-{last} mask",
           title=f"dose-response at step-{last} weights, task 'all'\n95% t-intervals over {unit}"
                 + (f"; {slope_text}" if slope_text else ""))
    plots.legend_outside(ax, fontsize=7)
    fig.tight_layout()
    return fig


def drift_by_layer_type(pairs, *, first: int, last: int, share: float, unit: str, estimator: str = "taylor",
                        task: str = "all"):
    """D(first, last) per layer type (and all parameters), one bar per arm, with t-intervals."""
    plt = _plt()
    sub = pairs[(pairs["kind"] == "drift") & (pairs["t"] == first) & (pairs["s"] == last) & (pairs["task"] == task)
                & (pairs["share"] == share) & (pairs["estimator"] == estimator)]
    tab = model_table(sub, by=[*ARM, "group"], columns=("d",), unit=unit)
    arms = _arms(sub)
    groups = ["all"] + sorted(g for g in set(tab["group"]) if g != "all")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 2), 3.8))
    width = 0.8 / len(arms)
    for k, (regime, sch) in enumerate(arms):
        d = tab[(tab["regime"] == regime) & (tab["schedule"] == sch)].set_index("group").reindex(groups)
        x = np.arange(len(groups)) + (k - (len(arms) - 1) / 2) * width
        err = np.nan_to_num(np.vstack([d["d"] - d["d_low"], d["d_high"] - d["d"]]))
        ax.bar(x, d["d"], width, yerr=err, capsize=3, color=f"C{k}", label=f"{regime}, {sch}")
    ax.set_xticks(np.arange(len(groups)), labels=groups)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="layer type", ylabel=f"D(step {first}, step {last})",
           title=f"{estimator}, task '{task}', top {share:.0%}\n95% t-interval over {unit}")
    plots.legend_outside(ax, title="arm", fontsize=8)
    fig.tight_layout()
    return fig


def drift_matrix(pairs, *, share: float, estimator: str = "taylor", task: str = "all"):
    """Heatmaps of D(t, s) (mean over pretrained models) for every pair t < s, one panel per arm."""
    plt = _plt()
    sub = pairs[(pairs["kind"] == "drift") & (pairs["task"] == task) & (pairs["share"] == share)
                & (pairs["estimator"] == estimator) & (pairs["group"] == "all")]
    arms = _arms(sub)
    steps = sorted(set(sub["t"]) | set(sub["s"]))
    fig, axes = plt.subplots(1, len(arms), figsize=(4.4 * len(arms), 4.0), squeeze=False)
    for ax, (regime, sch) in zip(axes[0], arms):
        mat = np.full((len(steps), len(steps)), np.nan)
        mm = model_means(sub[(sub["regime"] == regime) & (sub["schedule"] == sch)], by=["t", "s"], columns=("d",))
        for (t, s), v in mm.groupby(["t", "s"])["d"].mean().items():
            mat[steps.index(t), steps.index(s)] = v
        plots.matrix(ax, mat, xlabels=[str(s) for s in steps], ylabels=[str(t) for t in steps],
                     cbar_label="D (mean over models)", cmap="magma", vmin=0, vmax=1, fmt=".2f")
        ax.set(xlabel="later checkpoint s", ylabel="earlier checkpoint t", title=f"{regime}, {sch}: D(t, s)")
    fig.suptitle(f"{estimator}, task '{task}', top {share:.0%}", fontsize=10)
    fig.tight_layout()
    return fig
