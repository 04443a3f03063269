"""Figures of Study 05: each function returns a matplotlib Figure and saves nothing (the notebook
saves it with the workbench's plots module)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from epi_utils.workbench.plots import natural_order


def threshold_vs_labels(thresholds: pd.DataFrame):
    """Policy thresholds of test queries grouped by their true number of aspects: one panel per
    (policy, dataset), boxes per label count coloured by setting, the tuned static thresholds as
    dashed lines in the setting's colour.

    ``thresholds``: columns ``method, dataset, setting, n_labels, threshold, static_threshold``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    panels = list(dict.fromkeys(zip(thresholds["method"], thresholds["dataset"])))
    settings = list(dict.fromkeys(thresholds["setting"]))
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.6 * nrow + 0.5), squeeze=False, sharey=True)
    legend = None
    for ax, (method, ds) in zip(axes.flat, panels):
        sub = thresholds[(thresholds.method == method) & (thresholds.dataset == ds)]
        sns.boxplot(data=sub, x="n_labels", y="threshold", hue="setting", hue_order=settings, ax=ax, fliersize=1,
                    linewidth=0.8, palette=[f"C{i}" for i in range(len(settings))])
        for i, setting in enumerate(settings):
            g = sub[sub.setting == setting]
            if len(g):
                ax.axhline(g["static_threshold"].mean(), ls="--", lw=0.8, color=f"C{i}")
        counts = sub.groupby("n_labels").size()
        ax.set_xticks(range(len(counts)), [f"{k}\n({v})" for k, v in counts.items()], fontsize=8)
        ax.set_title(f"{method.replace('proto_awatt_', '')} | {ds}", fontsize=9)
        ax.set_xlabel("aspects in the query (number of queries)")
        ax.set_ylabel("policy threshold (dashed: static)")
        if ax.get_legend():
            if not legend:
                legend = (list(ax.get_legend().legend_handles), [t.get_text() for t in ax.get_legend().get_texts()])
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if legend:
        fig.legend(*legend, loc="lower center", ncol=min(4, max(len(legend[1]), 1)), fontsize=8, title="setting",
                   title_fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12 / nrow, 1, 1))
    return fig


def paired_differences(comparisons: list[dict], *, metric: str = "macro_f1", claims=None):
    """Forest plot of each claim's paired difference A - B on ``metric`` (one panel per claim) for
    every (test dataset, setting), the pooled ``all`` row included, with its 95% interval over
    seeds; the dotted line is no difference."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sel = [c for c in comparisons if c["metric"] == metric and (claims is None or c["claim"] in claims)]
    panels = list(dict.fromkeys(c["claim"] for c in sel)) or ["none"]
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    rows = max([sum(c["claim"] == p for c in sel) for p in panels] + [1])
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.7 * ncol, (0.3 * rows + 1.5) * nrow + 0.4), squeeze=False)
    handle = None
    for ax, claim in zip(axes.flat, panels):
        cs = [c for c in sel if c["claim"] == claim]
        y = np.arange(len(cs))[::-1]
        d = np.array([c["diff"]["mean"] for c in cs])
        err = np.array([[c["diff"]["mean"] - c["diff"]["low"], c["diff"]["high"] - c["diff"]["mean"]] for c in cs]).T
        if cs:
            handle = ax.errorbar(d, y, xerr=err, fmt="o", color="C0", capsize=3, ms=4)
        ax.axvline(0, ls=":", color="k", lw=0.8)
        labels = [f"{c['dataset']} {c['setting']}" for c in cs]
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_ylabel("test set, setting", fontsize=8)
        ax.set_xlabel(f"{metric}: A - B", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        if cs:
            ax.set_title(f"{claim}\nA={cs[0]['a_name']}\nB={cs[0]['b_name']}", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if handle is not None:
        fig.legend([handle], ["A - B with its 95% t-interval over seeds; dotted: no difference"], loc="lower center",
                   ncol=1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def policy_curves(curves: pd.DataFrame, training: pd.DataFrame | None = None):
    """Validation-reward curves of the threshold policies on the held-out episodes: one panel per
    setting with the post-hoc policy's reward per epoch (epoch 0: before training, i.e. the static
    threshold; a line per seed, the restored epoch dotted) and the static threshold's and the joint policy's reward on the same episodes (dashed
    and dash-dotted, means over seeds); with ``training``, a last panel with the joint policy's
    held-out reward per encoder epoch (all settings' episodes, a line per seed)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    settings = natural_order(curves["setting"]) if len(curves) else []
    joint = (training[training["policy_val_reward"].notna()] if training is not None and "policy_val_reward" in training
             else pd.DataFrame())
    n = max(len(settings) + (1 if len(joint) else 0), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.4), squeeze=False)
    handles = {}
    for ax, setting in zip(axes[0], settings):
        sub = curves[curves.setting == setting]
        for seed, g in sub.groupby("seed"):
            g = g[g.val_reward.notna()]
            (h,) = ax.plot(g.epoch, g.val_reward, color="C0", lw=0.9, alpha=0.8)
            handles.setdefault("post-hoc policy (one line per seed)", h)
            best = g[g.epoch == g.best_epoch]
            (h,) = ax.plot(best.epoch, best.val_reward, "o", color="C0", ms=4)
            handles.setdefault("restored epoch", h)
        handles.setdefault("static threshold (mean over seeds)",
                           ax.axhline(sub.groupby("seed").static_reward.first().mean(), color="C1", ls="--", lw=1))
        handles.setdefault("joint policy (mean over seeds)",
                           ax.axhline(sub.groupby("seed").joint_reward.first().mean(), color="C2", ls="-.", lw=1))
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("post-hoc policy epoch (0: untrained)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("held-out reward")
    if len(joint):
        ax = axes[0][len(settings)]
        for (seed, group), g in joint.groupby(["seed", "settings"]):
            (h,) = ax.plot(g.epoch, g.policy_val_reward, color="C2", lw=0.9, alpha=0.8)
            handles.setdefault("joint policy per encoder epoch", h)
        ax.set_title("joint policy, during meta-training", fontsize=9)
        ax.set_xlabel("encoder epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("held-out reward")
    if not settings and not len(joint):
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no policy was trained", ha="center", va="center")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(3, max(len(handles), 1)),
               fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def training_curves(training: pd.DataFrame):
    """Validation AUC per epoch of every trained model (one panel per architecture; a line per
    (settings, seed), coloured by settings; the restored best epoch marked with a dot)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    archs = list(dict.fromkeys(training["arch"]))
    groups = list(dict.fromkeys(training["settings"]))
    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 3.8), squeeze=False, sharey=True)
    for ax, arch in zip(axes[0], archs):
        sub = training[training.arch == arch]
        for (settings, seed), g in sub.groupby(["settings", "seed"], sort=False):
            color = f"C{groups.index(settings)}"
            label = settings if seed == sub[sub.settings == settings].seed.min() else None
            ax.plot(g.epoch, g.val_auc, color=color, lw=0.9, alpha=0.8, label=label)
            best = g[g.best]
            ax.plot(best.epoch, best.val_auc, "o", color=color, ms=4)
        ax.set_title(arch)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("held-out AUC\n(dot: restored epoch)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(len(labels), 1)), fontsize=7,
               title="model trained on settings (one line per seed)", title_fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def attention_tokens(examples: list[dict], *, max_tokens: int = 30):
    """Support-set attention weights over the words of a few support sentences (one row each); with
    no examples (an encoder other than the CNN records none) a figure that says so."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = len(examples)
    if n == 0:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no support-attention examples recorded (they are drawn for the CNN encoder)",
                ha="center", va="center", fontsize=9)
        return fig
    fig, axes = plt.subplots(n, 1, figsize=(12, 1.9 * n + 0.4), squeeze=False)
    for ax, ex in zip(axes[:, 0], examples):
        toks, w = ex["tokens"][:max_tokens], np.asarray(ex["weights"][:max_tokens])
        im = ax.imshow(w[None, :], aspect="auto", cmap="Reds", vmin=0, vmax=max(w.max(), 1e-6))
        bar = fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="weight")
        bar.locator = MaxNLocator(2)
        bar.update_ticks()
        ax.set_xticks(range(len(toks)), toks, rotation=60, fontsize=8, ha="right", rotation_mode="anchor")
        ax.set_yticks([])
        ax.grid(False)
        ax.set_title(f"prototype of {ex['class']}  (sentence aspects: {', '.join(ex['aspects'])})", fontsize=9, loc="left")
        ax.set_xlabel("word of the support sentence", fontsize=8)
    fig.tight_layout()
    return fig


def per_class_bars(table: pd.DataFrame, *, title: str = "test classes"):
    """Horizontal bars of per-class F1, one panel per dataset (``table``: columns ``dataset, class,
    f1``, as :func:`~epi_utils.acd.summary.per_class_tables` gives)."""
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(table["dataset"])) or ["none"]
    rows = max([int((table["dataset"] == ds).sum()) for ds in datasets] + [1])
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 0.28 * rows + 1.0), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = table[table["dataset"] == ds]
        ax.barh(sub["class"], sub["f1"], color="C0")
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1 (pooled over settings, seeds, episodes)")
        ax.set_ylabel("aspect category")
        ax.set_title(f"{ds} {title}")
    fig.tight_layout()
    return fig


def results_bars(summary: pd.DataFrame, *, dataset: str, metric: str = "macro_f1"):
    """Bars of ``metric`` per setting and method with the seed 95% interval as error bars
    (``summary``: :func:`~epi_utils.acd.summary.over_seeds`, columns ``<metric>_low/_high``)."""
    import matplotlib.pyplot as plt

    sub = summary[summary.dataset == dataset]
    unit = f"95% t-interval over {int(sub['n'].iloc[0])} {sub['unit'].iloc[0]}" if len(sub) else "seeds"
    settings = natural_order(sub.setting)  # 5way5shot, 5way10shot, 10way5shot, 10way10shot
    methods = list(dict.fromkeys(sub.method))
    fig, ax = plt.subplots(figsize=(max(7.0, 2.4 * len(settings)), 3.4))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        g = sub[sub.method == m].set_index("setting").reindex(settings)
        err = np.abs(g[[f"{metric}_low", f"{metric}_high"]].to_numpy().T - g[metric].to_numpy())
        ax.bar(np.arange(len(settings)) + i * width, g[metric], width, yerr=err, label=m, capsize=2)
    ax.set_xticks(np.arange(len(settings)) + width * (len(methods) - 1) / 2, settings)
    ax.set_xlabel("N-way K-shot setting")
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset}: {metric} (mean over seeds, {unit})", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig
