"""Study 02's figures. Each function takes tables of :mod:`.summary` and returns a ``matplotlib``
figure; the notebook saves it (``workbench.plots``); nothing here writes a file."""
from __future__ import annotations

from typing import Sequence

import numpy as np

BOUND_STYLE = {"full_sft": ("k", "o"), "separate": ("k", "*"), "replay": ("k", "s"), "ewc": ("k", "D")}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _err(t, m):
    return np.vstack([t[m] - t[f"{m}_low"], t[f"{m}_high"] - t[m]])


def _ratio_sizes(ratios) -> dict[float, float]:
    """Marker size per isolation ratio: larger for larger ratios (the frontier's third dimension)."""
    ordered = sorted({float(r) for r in ratios})
    return {r: 3.5 + 2.0 * k for k, r in enumerate(ordered)}


def plot_frontier(frontier, *, x: str = "plastic", y: str = "retained0", title: str = "isolation-ratio frontier"):
    """Retention of stage 0 (``y``) against stage-1 score (``x``), mean and 95% t-interval over seeds
    on both axes: one line per masking policy through its ratios (marker size grows with the ratio, a
    size key in the legend), bounds as black markers."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    masked = frontier[frontier["ratio"].notna()]
    sizes = _ratio_sizes(masked["ratio"])
    for k, (method, g) in enumerate(masked.groupby("method", sort=False)):
        g = g.sort_values("ratio")
        ax.errorbar(g[x], g[y], xerr=_err(g, x), yerr=_err(g, y), ls="-", lw=1.2, capsize=2, color=f"C{k}",
                    marker="none", label=method)
        ax.scatter(g[x], g[y], s=[sizes[float(r)] ** 2 for r in g["ratio"]], color=f"C{k}", zorder=3)
    for _, r in frontier[frontier["ratio"].isna()].iterrows():
        color, marker = BOUND_STYLE.get(r["method"], ("k", "x"))
        ax.errorbar([r[x]], [r[y]], xerr=_err(r.to_frame().T.astype({x: float, y: float}), x),
                    yerr=_err(r.to_frame().T.astype({x: float, y: float}), y), marker=marker, ms=9, color=color,
                    capsize=2, ls="none", label=f"{r['method']} (bound)", mfc="white" if marker != "o" else color)
    for ratio, size in sizes.items():  # the size key
        ax.plot([], [], ls="none", marker="o", ms=size, color="0.5", label=f"ratio {100 * ratio:g}%")
    ax.set(xlabel=f"{x}: stage-1 held-out score after stage 1", ylabel=f"{y}: stage-0 score after stage 1",
           title=title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_paired(cmp, *, metric: str = "retained0"):
    """Paired differences (EPI variant - static variant) on ``metric`` at each ratio, with their 95%
    t-intervals over seeds; one line per pair, 0 marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if not len(cmp):
        ax.text(0.5, 0.5, "no EPI variant and static mask in this run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    d = cmp[(cmp["metric"] == metric) & cmp["ratio"].notna()]
    ratios = sorted(d["ratio"].unique())
    pairs = list(d.groupby(["a_method", "b_method"], sort=False))
    width = 0.8 / max(1, len(pairs))
    for k, ((a, b), g) in enumerate(pairs):
        g = g.set_index("ratio").reindex(ratios)
        xs = np.arange(len(ratios)) - 0.4 + width * (k + 0.5)
        ax.errorbar(xs, g["diff"], yerr=_err(g, "diff"), marker="o", ms=4,
                    capsize=2, ls="-", lw=0.8, color=f"C{k}", label=f"{a} - {b}")
    ax.axhline(0, color="k", lw=0.7)
    ax.set_xticks(range(len(ratios)), [f"{100 * r:g}%" for r in ratios])
    ax.set(xlabel="isolation ratio", ylabel=f"paired difference in {metric}",
           title=f"EPI variants - static masks, {metric} (95% t-interval over seeds)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_moved(frontier, *, methods: Sequence[str] | None = None):
    """Share of the elements a policy owned for stage-0 tasks at the start of stage 1 that changed
    during stage 1, per ratio (0 = the protection held); ratios as evenly spaced categories."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    masked = frontier[frontier["ratio"].notna()]
    ratios = sorted({float(r) for r in masked["ratio"]})
    pos = {r: i for i, r in enumerate(ratios)}
    for k, (method, g) in enumerate(masked.groupby("method", sort=False)):
        if methods is not None and method not in methods:
            continue
        g = g.sort_values("ratio")
        ax.errorbar([pos[float(r)] for r in g["ratio"]], g["moved_owned_stage0"], yerr=_err(g, "moved_owned_stage0"),
                    marker="o", ms=4, capsize=2, color=f"C{k}", label=method)
    ax.set_xticks(range(len(ratios)), [f"{100 * r:g}%" for r in ratios])
    ax.set(xlabel="isolation ratio", ylabel="share changed in stage 1", ylim=(-0.03, 1.03),
           title="does the protection of stage 0 hold?")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_ewc_tuning(tuning, chosen: float | None):
    """Validation score after stage 1 for each EWC lambda tried (``tuning``: the ``ewc_tuning`` frame or
    its rows), lambdas as evenly spaced categories in increasing order, the chosen one marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rows = tuning.to_dict(orient="records") if hasattr(tuning, "to_dict") else list(tuning)
    rows = sorted(rows, key=lambda r: float(r["ewc_lambda"]))
    lam = [float(r["ewc_lambda"]) for r in rows]
    ax.plot(range(len(lam)), [r["val_score"] for r in rows], marker="o", label="validation score")
    if chosen is not None and float(chosen) in lam:
        i = lam.index(float(chosen))
        ax.plot([i], [rows[i]["val_score"]], ls="none", marker="o", ms=12, mfc="none", mec="C3", mew=2,
                label=f"chosen lambda = {chosen:g}")
    ax.set_xticks(range(len(lam)), [f"{v:.0e}" if v else "0" for v in lam], rotation=30, ha="right",
                  rotation_mode="anchor")
    ax.set(xlabel="EWC lambda", ylabel="validation score after stage 1", title="EWC lambda on the validation split")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the mixed design (issue 26)
ARM_NAMES = {"full_sft": "full mixed SFT", "separate": "one model per task", "cpi_ft": "CPI-FT", "epi": "EPI",
             "epi_warmup_frozen": "EPI frozen after warmup", "random_refresh": "random masks, EPI's schedule"}


def plot_epi_minus_frozen(cmp, *, margin: float):
    """The answer: EPI - EPI frozen after warmup per isolation ratio (and pooled), one panel per task and
    the mean over tasks; 95% t-interval over seeds, the pre-declared equivalence band (+-margin) shaded."""
    plt = _plt()
    sel = cmp[(cmp["a"] == "epi") & (cmp["b"] == "epi_warmup_frozen")]
    tasks = list(dict.fromkeys(sel["task"]))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(2.6 * max(1, len(tasks)) + 0.6, 3.6), sharey=True,
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        g = sel[sel["task"] == task]
        labels = [f"{100 * r:g}%" if r == r else "pooled" for r in g["ratio"]]
        xs = np.arange(len(g))
        ax.axhspan(-margin, margin, color="0.9", zorder=0)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.errorbar(xs, g["diff"], yerr=np.vstack([g["diff"] - g["diff_low"], g["diff_high"] - g["diff"]]),
                    marker="o", ls="none", capsize=3, color="C0")
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set(title=task, xlabel="isolation ratio")
    axes[0][0].set_ylabel("EPI - frozen, test score")
    fig.suptitle(f"EPI minus EPI frozen after warmup (grey: equivalence margin +-{margin:g})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_scores_by_ratio(scores, *, task: str = "mean"):
    """Mean test score (``task``, default the mean over tasks) per arm against the isolation ratio, 95%
    interval over seeds; floor and ceiling as horizontal lines with their interval shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.8, 4.2))
    s = scores[scores["task"] == task]
    ratio_arms = s[s["ratio"].notna()]
    for k, (arm, g) in enumerate(ratio_arms.groupby("arm", sort=False)):
        g = g.sort_values("ratio")
        ax.errorbar(g["ratio"] * 100, g["score"], yerr=_err(g, "score"), marker="o", capsize=2, color=f"C{k}",
                    label=ARM_NAMES.get(arm, arm))
    for arm, style in (("full_sft", "--"), ("separate", ":")):
        b = s[(s["arm"] == arm) & s["ratio"].isna()]
        if len(b):
            ax.axhline(float(b["score"].iloc[0]), color="k", ls=style, lw=1, label=f"{ARM_NAMES[arm]} (bound)")
            lo, hi = b["score_low"].iloc[0], b["score_high"].iloc[0]
            if lo == lo and hi == hi:
                ax.axhspan(float(lo), float(hi), color="0.85", alpha=0.5, zorder=0)
    ax.set_xscale("log")
    ax.set(xlabel="isolation ratio (% of parameters per task)", ylabel=f"test score ({task})",
           title="held-out test score by arm and isolation ratio")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_turnover(curve):
    """Turnover of the tasks' critical sets at each refresh (share of the new set not in the previous one;
    mean over tasks and seeds), one line per arm and ratio."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.8, 4.0))
    for k, ((arm, ratio), g) in enumerate(curve.groupby(["arm", "ratio"], sort=True)):
        ax.plot(g["step"], g["turnover"], marker=".", color=f"C{k}",
                label=f"{ARM_NAMES.get(arm, arm)} @ {100 * ratio:g}%")
    ax.set(xlabel="optimizer step of the refresh", ylabel="turnover since the previous refresh",
           title="how much the masks move", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig
