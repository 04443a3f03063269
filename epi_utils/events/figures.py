"""Figures of Study 04: each function returns a figure; the notebook saves it (``plots``), under
the name given in its docstring."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from epi_utils.events.design import EncoderRecord


def recall_vs_events(by_count: pd.DataFrame):
    """Role-level test recall against the number of gold records per document, one line per method,
    error bars = 95% t-interval over the seed units (``summary.recall_by_count_table``; none where a
    bin has one unit). Saved as ``recall_vs_num_events``."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, sub in by_count.groupby("method", sort=False, observed=True):
        ax.errorbar(sub["n_events"].astype(str), sub["recall"], yerr=[(sub["recall"] - sub["recall_low"]).fillna(0), (sub["recall_high"] - sub["recall"]).fillna(0)],
                    marker="o", capsize=3, label=method)
    ax.set(xlabel="gold records in the document", ylabel="role-level recall (test)",
           title="Recall vs number of events (95% t-interval over seed units)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def encoder_curves(encoders: Sequence[EncoderRecord]):
    """Dev mention F1 of the NER head after every stage-1 epoch, one line per encoder (the best
    epoch is the one kept). Saved as ``encoder_dev_mention_f1``."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for e in encoders:
        hist = [h for h in e.history if "dev_mention_f1" in h]
        if hist:
            ax.plot([h["epoch"] for h in hist], [h["dev_mention_f1"] for h in hist], marker="o",
                    label=f"{e.step}, seed {e.encoder_seed}")
    ax.set(xlabel="stage-1 epoch", ylabel="dev mention F1 (NER head)", title="Entity front end on dev")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def decoder_curves(histories: dict[str, list]):
    """Dev micro F1 at each decoder check, one line per method (first seed unit). Saved as ``decoder_dev_f1``."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, hist in histories.items():
        pts = [(h["epoch"], h["dev_f1"]) for h in hist if "dev_f1" in h]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    ax.set(xlabel="decoder epoch", ylabel="dev micro F1", title="Decoder checkpoints on dev (first seed unit)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig
