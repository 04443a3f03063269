"""Figures: one consistent style and ``save_figure`` into the current run's ``figures/``."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from epi_utils.workbench.figure_lint import lint_figure
from epi_utils.workbench.runs import atomic_write_json, current_run_dir

_STYLE_APPLIED = False
PALETTE = "colorblind"


def use_style() -> None:
    """Apply the project's seaborn style (white grid, colour-blind palette, readable fonts)."""
    global _STYLE_APPLIED
    import matplotlib
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "axes.titleweight": "bold"})
    _STYLE_APPLIED = True


FIGURE_FORMATS = ("png", "pdf")
FORMATS_ENV = "EPI_FIGURE_FORMATS"
_KNOWN_FORMATS = ("png", "pdf", "svg")


def figure_formats() -> tuple[str, ...]:
    """The formats :func:`save_figure` writes by default: ``FIGURE_FORMATS`` (PNG for the report, PDF for a
    paper), or the comma-separated list in the environment variable ``EPI_FIGURE_FORMATS`` (e.g. ``png`` for
    a quick run; it must contain ``png``, which the notebook shows)."""
    raw = os.environ.get(FORMATS_ENV)
    if raw is None:
        return FIGURE_FORMATS
    formats = tuple(f.strip().lower() for f in raw.split(",") if f.strip())
    bad = [f for f in formats if f not in _KNOWN_FORMATS]
    if bad or "png" not in formats:
        raise ValueError(f"{FORMATS_ENV}={raw!r}: a comma-separated list of {', '.join(_KNOWN_FORMATS)} that "
                         f"includes png" + (f" (unknown: {bad})" if bad else ""))
    return formats


def save_figure(fig, name: str, *, run_dir: os.PathLike | str | None = None,
                formats: Sequence[str] | None = None) -> None:
    """Save ``fig`` as ``<run_dir>/figures/<name>.<fmt>`` for each format (default :func:`figure_formats`).

    Returns nothing. In a notebook (a Jupyter kernel with the inline backend) the saved PNG is shown right
    here and the figure is closed, so the backend does not draw it a second time at the end of the cell:
    the report shows the very file in ``figures/``, at the size the inline backend would give it.

    ``name`` may contain letters, digits, ``-`` and ``_`` only (it becomes a file name).
    ``run_dir`` defaults to :func:`epi_utils.workbench.runs.current_run_dir`.
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name or ""):
        raise ValueError(f"figure name {name!r} must use only letters, digits, '-' and '_'")
    formats = figure_formats() if formats is None else tuple(formats)
    bad = [f for f in formats if f not in _KNOWN_FORMATS]
    if bad:
        raise ValueError(f"unsupported figure format(s) {bad}; allowed: {', '.join(_KNOWN_FORMATS)}")
    folder = Path(run_dir) if run_dir is not None else current_run_dir()
    folder = folder / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        fig.savefig(folder / f"{name}.{fmt}", format=fmt)
    record_lint(fig, name, folder=folder)
    if "png" in formats:
        _show_saved_png(fig, folder / f"{name}.png")


def _inline_kernel() -> bool:
    """True in a Jupyter kernel whose matplotlib backend is the inline one (papermill runs, JupyterLab)."""
    import sys

    if "IPython" not in sys.modules or "matplotlib" not in sys.modules:
        return False
    import matplotlib
    from IPython import get_ipython

    shell = get_ipython()
    return (shell is not None and getattr(shell, "kernel", None) is not None
            and "inline" in str(matplotlib.get_backend()).lower())


def _show_saved_png(fig, png: Path) -> None:
    """Show the PNG :func:`save_figure` wrote instead of letting the inline backend draw ``fig`` again.

    The image is displayed at the width the inline backend would draw it (``figure.dpi`` over
    ``savefig.dpi`` of the file's pixels), so on a high-density screen it is sharper, never bigger."""
    if not _inline_kernel():
        return
    import matplotlib
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    data = png.read_bytes()
    width_px = int.from_bytes(data[16:20], "big")  # PNG IHDR: width, big-endian, bytes 16-19
    save_dpi = matplotlib.rcParams["savefig.dpi"]
    save_dpi = fig.dpi if save_dpi == "figure" else float(save_dpi)
    shown = max(1, round(width_px * float(fig.dpi) / save_dpi))
    display(Image(data=data, format="png", width=shown))
    plt.close(fig)


LINT_FILE = "lint.json"


def record_lint(fig, name: str, *, folder: Path) -> list[str]:
    """Run :func:`epi_utils.workbench.figure_lint.lint_figure` on a saved figure and keep its problems
    in ``<folder>/lint.json`` (``{figure name: [problem, ...]}``, written atomically), so that a run's
    figures can be checked after the fact (the notebook smoke tests read it)."""
    problems = lint_figure(fig)
    path = folder / LINT_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        known = {}
    known[name] = problems
    atomic_write_json(path, known)
    return problems


def figure_paths(name: str, *, run_dir: os.PathLike | str | None = None) -> list[Path]:
    """The files :func:`save_figure` wrote for ``name`` in the run folder."""
    folder = (Path(run_dir) if run_dir is not None else current_run_dir()) / "figures"
    return sorted(folder.glob(f"{name}.*"))


def matrix(ax, values, *, xlabels: Sequence[str], ylabels: Sequence[str], cbar_label: str = "",
           cmap: str = "viridis", annotate: bool = True, fmt: str = ".2g", vmin: float | None = None,
           vmax: float | None = None):
    """Draw ``values`` (shape ``(len(ylabels), len(xlabels))``) as a heatmap the project's way: a
    colour bar with ``cbar_label``, no grid lines, x tick labels rotated and right-aligned so long
    names do not overlap, cell values written in when ``annotate``. Returns the image."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if arr.shape != (len(ylabels), len(xlabels)):
        raise ValueError(f"matrix: values of shape {arr.shape} do not match {len(ylabels)} y labels x "
                         f"{len(xlabels)} x labels")
    image = ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(xlabels)), labels=list(xlabels), rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(ylabels)), labels=list(ylabels))
    bar = ax.figure.colorbar(image, ax=ax)
    if cbar_label:
        bar.set_label(cbar_label)
    if annotate and arr.size <= 400:
        finite = arr[np.isfinite(arr)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(arr):
            if np.isfinite(v):
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8,
                        color="white" if v < mid else "black")
    return image


def natural_key(value) -> tuple:
    """Sort key that reads the numbers inside a label as numbers: ``"5-way 10-shot"`` sorts after
    ``"5-way 5-shot"`` and before ``"10-way 5-shot"`` (a plain string sort puts "10-way" first)."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p.lower()) for i, p in enumerate(parts) if p != "")


def natural_order(values) -> list:
    """The distinct ``values`` in natural order (:func:`natural_key`), e.g. the settings of a study
    as a reader expects them on an axis: 5-way 5-shot, 5-way 10-shot, 10-way 5-shot, 10-way 10-shot."""
    return sorted(dict.fromkeys(values), key=natural_key)


def legend_outside(ax, *, where: str = "right", **kwargs):
    """Put ``ax``'s legend outside the plotting area, where it cannot cover data.

    ``where="right"``: an axes legend beside the plot's upper right corner. ``where="below"``: a
    figure legend under everything (``loc="outside lower center"``, one row of up to 4 entries) when
    the figure uses ``layout="constrained"``, else an axes legend below the x label. The figure needs a
    layout engine or ``savefig``'s tight bounding box to make room. Extra ``kwargs`` go to
    ``legend``. Returns the legend."""
    handles, labels = ax.get_legend_handles_labels()
    if where == "right":
        return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)
    if where != "below":
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    kwargs.setdefault("ncol", max(1, min(len(handles), 4)))
    fig = ax.figure
    engine = fig.get_layout_engine()
    if engine is not None and type(engine).__name__ == "ConstrainedLayoutEngine":
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        return fig.legend(handles, labels, loc="outside lower center", **kwargs)
    return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.3), borderaxespad=0.0, **kwargs)
