"""Figures and tables of the ILP notebook: prevalence, taxonomy, confusion, mitigation, explorer.

Each function takes the tables built by :mod:`epi_utils.ilp.study` and returns a matplotlib
``Figure`` (saved by the notebook with :func:`epi_utils.workbench.plots.save_figure`) or a DataFrame.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp.diagnosis import CAUSES, NO_CAUSE, UNEXPLAINED

EXPLORER_COLUMNS = ("seed", "task", "stage", "prompt", "response", "diagnosis", "evidence", "planted",
                    "probe_category", "probe_base_answer", "dyn_correctness", "dyn_max_in_stage",
                    "rarity_group_size")


def prevalence_table(pooled: pd.DataFrame, *, by: Sequence[str] = ("task", "template_id"), min_size: int = 3,
                     worst_k: int = 6) -> pd.DataFrame:
    """Accuracy on the training data: aggregate, per task, and the worst template subsets, as
    mean over seeds (``pooled`` = stacked per-seed tables with a ``seed`` column)."""
    from epi_utils.ilp.detection import subset_gaps, unlearned_rates

    per_task = pooled.groupby("seed").apply(lambda t: unlearned_rates(t, by="task")["accuracy"], include_groups=False)
    per_task = per_task.stack().groupby(level=-1).mean() if isinstance(per_task, pd.DataFrame) else per_task.groupby(level=-1).mean()
    rows = [{"subset": f"task={k}" if k != "all" else "aggregate", "accuracy": float(v)} for k, v in per_task.items()]
    gaps = pooled.groupby("seed").apply(lambda t: subset_gaps(t, by=by, min_size=min_size, worst_k=worst_k),
                                        include_groups=False).reset_index(drop=True)
    worst = gaps[gaps["by"] != "task"].groupby("group")["accuracy"].mean().sort_values().head(worst_k)
    rows += [{"subset": f"template={k}", "accuracy": float(v)} for k, v in worst.items()]
    return pd.DataFrame(rows)


def prevalence_figure(prev: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(prev) + 1.2))
    colors = ["#444444" if s == "aggregate" else ("#4C72B0" if s.startswith("task=") else "#DD8452")
              for s in prev["subset"]]
    ax.barh(prev["subset"], prev["accuracy"], color=colors)
    agg = float(prev.loc[prev["subset"] == "aggregate", "accuracy"].iloc[0])
    ax.axvline(agg, color="k", ls="--", lw=1, label=f"aggregate {agg:.2f}")
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("training-set exact match after SFT (mean over seeds)")
    ax.set_title("Aggregate accuracy hides unlearned subsets")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def taxonomy_counts(pooled: pd.DataFrame) -> pd.DataFrame:
    """Unlearned samples per cause, mean over seeds: ``diagnosed`` (cascade) and ``planted``."""
    unl = pooled[~pooled["learned"].astype(bool)]
    n_seeds = max(1, pooled["seed"].nunique())
    diag = unl["diagnosis"].value_counts().reindex(list(CAUSES) + [UNEXPLAINED], fill_value=0) / n_seeds
    plant = unl["planted"].replace({NO_CAUSE: UNEXPLAINED}).value_counts().reindex(list(CAUSES) + [UNEXPLAINED],
                                                                                    fill_value=0) / n_seeds
    return pd.DataFrame({"diagnosed": diag, "planted": plant})


def taxonomy_figure(counts: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(counts))
    ax.bar(x - 0.2, counts["diagnosed"], width=0.4, label="diagnosed (rule cascade)")
    ax.bar(x + 0.2, counts["planted"], width=0.4, label="planted (ground truth; 'none' as unexplained)")
    ax.set_xticks(x, [c.replace("_", "\n") for c in counts.index])
    ax.set_ylabel("unlearned samples per seed")
    ax.set_title("Taxonomy of unlearned training samples")
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(conf: pd.DataFrame, *, title: str = "Diagnosis vs planted cause (pooled over seeds)"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    mat = conf.to_numpy()
    ax.imshow(mat, cmap="Blues")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, str(int(mat[i, j])), ha="center", va="center",
                    color="white" if mat[i, j] > mat.max() / 2 else "black")
    ax.set_xticks(range(mat.shape[1]), [c.replace("_", "\n") for c in conf.columns], fontsize=8)
    ax.set_yticks(range(mat.shape[0]), list(conf.index), fontsize=8)
    ax.set_xlabel("diagnosed")
    ax.set_ylabel("planted")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def mitigation_figure(summary: pd.DataFrame, *, metric: str = "recovery_rate"):
    """Grouped bars fix vs control per cause with bootstrap 95% CIs (``summary`` from
    :func:`epi_utils.ilp.recovery.summarize_recovery`)."""
    import matplotlib.pyplot as plt

    sub = summary[summary["metric"] == metric]
    causes = [c for c in CAUSES if c in set(sub["cause"])]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(causes))
    for k, (arm, color) in enumerate((("fix", "#55A868"), ("control", "#8C8C8C"))):
        r = sub[sub["arm"] == arm].set_index("cause").reindex(causes)
        err = np.vstack([r["mean"] - r["ci_low"], r["ci_high"] - r["mean"]])
        ax.bar(x + (k - 0.5) * 0.4, r["mean"], width=0.4, yerr=err, capsize=3, color=color,
               label="targeted fix" if arm == "fix" else "compute-matched control")
    ax.set_xticks(x, [c.replace("_", "\n") for c in causes])
    ax.set_ylabel("recovery rate" if metric == "recovery_rate" else metric)
    ax.set_ylim(0, 1.05 if metric == "recovery_rate" else None)
    ax.set_title("Mitigations as interventions (mean over seeds, 95% bootstrap CI)")
    ax.legend()
    fig.tight_layout()
    return fig


def explorer_table(pooled: pd.DataFrame, *, seed: int | None = None, limit: int = 40) -> pd.DataFrame:
    """Unlearned samples with their diagnosis and the evidence that decided it (first ``limit``
    rows, ordered by diagnosis then task), for one seed (default: the first)."""
    unl = pooled[~pooled["learned"].astype(bool)]
    if unl.empty:
        return pd.DataFrame(columns=EXPLORER_COLUMNS)
    seed = unl["seed"].min() if seed is None else seed
    sub = unl[unl["seed"] == seed]
    cols = [c for c in EXPLORER_COLUMNS if c in sub.columns]
    return sub[cols].sort_values(["diagnosis", "task"], kind="stable").head(limit)


def confusion_notes(conf: pd.DataFrame, *, top: int = 4) -> list[str]:
    """The largest off-diagonal cells of the confusion matrix as sentences (computed text)."""
    notes = []
    cells = []
    for p in conf.index:
        for d in conf.columns:
            if p != d and not (p == NO_CAUSE and d == UNEXPLAINED) and conf.loc[p, d] > 0:
                cells.append((int(conf.loc[p, d]), p, d))
    for n, p, d in sorted(cells, reverse=True)[:top]:
        row = int(conf.loc[p].sum())
        notes.append(f"{n} of {row} unlearned samples planted as '{p}' were diagnosed '{d}'")
    return notes or ["no off-diagonal confusions"]
