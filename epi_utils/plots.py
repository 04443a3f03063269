"""Figures: one consistent style and ``save_figure`` into the current run's ``figures/``."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from .runs import current_run_dir

_STYLE_APPLIED = False
PALETTE = "colorblind"


def use_style() -> None:
    """Apply the project's seaborn style (white grid, colour-blind palette, readable fonts)."""
    global _STYLE_APPLIED
    import matplotlib

    if not os.environ.get("DISPLAY") and "ipykernel" not in os.environ.get("JPY_PARENT_PID", "ipykernel"):
        matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "axes.titleweight": "bold"})
    _STYLE_APPLIED = True


def save_figure(fig, name: str, *, run_dir: os.PathLike | str | None = None,
                formats: Sequence[str] = ("png", "pdf")) -> Path:
    """Save ``fig`` as ``<run_dir>/figures/<name>.<fmt>`` for each format; return the PNG path.

    ``name`` may contain letters, digits, ``-`` and ``_`` only (it becomes a file name).
    ``run_dir`` defaults to :func:`epi_utils.runs.current_run_dir`.
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name or ""):
        raise ValueError(f"figure name {name!r} must use only letters, digits, '-' and '_'")
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad:
        raise ValueError(f"unsupported figure format(s) {bad}; allowed: png, pdf, svg")
    folder = Path(run_dir) if run_dir is not None else current_run_dir()
    folder = folder / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    first = None
    for fmt in formats:
        path = folder / f"{name}.{fmt}"
        fig.savefig(path, format=fmt)
        first = first or path
    return first
