"""A lint for figures: what a reader cannot read, found from matplotlib's own text extents.

:func:`lint_figure` lays the figure out once (on the Agg canvas's renderer, drawing disabled) and
returns one sentence per problem; an empty list means the figure passed. It checks that

- **text does not overlap text**: tick labels of one axis do not run into each other (``3x10^1
  4x10^1``), and no title, axis label, tick label or annotation runs into another one (a y label under
  the neighbouring panel's tick labels). Rotated labels are compared as rotated rectangles, not as
  their axis-aligned boxes, so labels slanted by :func:`epi_utils.workbench.plots.matrix` pass;
- **the legend covers neither plotted data nor other text**: lines (as drawn, between points too),
  markers, bars, error bars and bands under the legend's box, within its axes;
- **every axis with data is labelled**: x and y labels on every axes that holds data and shows tick
  labels there (a label on a shared sibling, or a figure-level ``supxlabel``/``supylabel``, counts),
  and a label on every colour bar;
- **log scales only on positive data**: a ``log`` axis over values <= 0 (matplotlib hides or clips
  them silently), a ``symlog`` axis over negative values (zero is what symlog is for, negatives are
  not) and a ``logit`` axis outside (0, 1);
- **no text is cut at the figure edge**: every text lies inside the figure's canvas. (``savefig`` with
  ``bbox_inches="tight"`` grows the canvas to fit, ``plots.use_style`` sets it; the check still asks for
  a figure whose layout fits, e.g. ``layout="constrained"``, since a notebook or another saver may not.)

3D axes are skipped (their text extents do not follow the 2D rules) and polar axes need no axis labels.

Tolerance: overlaps and cuts smaller than ``tolerance_px`` (display pixels at the figure's dpi) are
ignored, so that boxes that only touch pass.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the most messages one kind of problem adds for one figure (the rest are counted).
MAX_PER_KIND = 8


@dataclass
class _Text:
    """One drawn text: its name for a message, group, rotated rectangle and axis-aligned box."""

    name: str
    group: str  # texts of one group are compared only by the check that owns the group
    kind: str   # "tick", "label", "title", "text", "legend"
    bbox: Any   # matplotlib Bbox, display pixels
    corners: np.ndarray  # (4, 2) corners of the (possibly rotated) rectangle
    owner: str = ""      # the axes' name when the text belongs to one (a prefix of ``name``)


def lint_figure(fig, *, tolerance_px: float = 1.0) -> list[str]:
    """Problems a reader would meet in ``fig`` (a matplotlib Figure), one sentence each; ``[]`` if none.

    Lays ``fig`` out (attaching an Agg canvas when it has no renderer) and checks text overlaps, the
    legend, axis labels, log scales and text cut at the figure edge (see the module docstring).
    ``tolerance_px``: overlaps or cuts up to this many display pixels are ignored.
    """
    renderer = _renderer(fig)
    problems: list[str] = []
    axes = [ax for ax in _all_axes(fig) if ax.get_visible() and getattr(ax, "name", "") != "3d"]
    names = {id(ax): _axes_name(ax, i) for i, ax in enumerate(axes)}
    texts: list[_Text] = []
    for ax in axes:
        texts.extend(_axes_texts(ax, names[id(ax)], renderer))
    texts.extend(_figure_texts(fig, renderer))
    problems += _text_overlaps(texts, tolerance_px)
    for legend, owner in _legends(fig, axes):
        problems += _legend_problems(legend, owner, axes, names, texts, renderer, tolerance_px)
    for ax in axes:
        problems += _label_problems(ax, names[id(ax)], fig, renderer)
        problems += _scale_problems(ax, names[id(ax)])
    problems += _cut_problems(fig, texts, _legends(fig, axes), renderer, tolerance_px)
    return problems


# ----------------------------------------------------------------------------------------------- drawing
def _renderer(fig):
    """The figure laid out as drawing would (layout engine, ticks, legends, text extents) on an Agg
    renderer at the figure's dpi, without rasterising it: the checks read extents, not pixels, and
    the figure has just been rendered for each saved file (issue 34: the lint's own full draw)."""
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    with renderer._draw_disabled():  # what Figure.draw_without_rendering does, on this canvas's renderer
        fig.draw(renderer)
    return renderer


def _all_axes(fig) -> list:
    out = list(fig.axes)
    for sub in getattr(fig, "subfigs", []) or []:
        out += [ax for ax in _all_axes(sub) if ax not in out]
    return out


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _plain(text: str) -> str:
    """``'$\\mathdefault{3\\times10^{1}}$'`` -> ``'3x10^1'``: a label as a reader sees it."""
    s = text.replace("\\mathdefault", "").replace("\\times", "x").replace("\\minus", "-").replace("$", "")
    s = re.sub(r"[{}\\]", "", s).replace("\n", " ").strip()
    return s if len(s) <= 40 else s[:37] + "..."


def _axes_name(ax, index: int) -> str:
    if _is_colorbar(ax):
        return f"colour bar {index}"
    title = ax.get_title() or ax.get_title(loc="left") or ax.get_title(loc="right")
    return f"axes {index} ({_plain(title)!r})" if title else f"axes {index}"


def _corners(text, bbox, renderer) -> np.ndarray:
    """Corners of the text's rotated rectangle; its centre is the centre of the axis-aligned ``bbox``."""
    angle = text.get_rotation() % 180.0
    x0, y0, x1, y1 = bbox.x0, bbox.y0, bbox.x1, bbox.y1
    if min(angle, 180.0 - angle) < 0.5:  # horizontal (0 or 180 degrees)
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if abs(angle - 90.0) < 0.5:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    rotation = text.get_rotation()
    try:
        text.set_rotation(0)
        flat = text.get_window_extent(renderer)
    finally:
        text.set_rotation(rotation)
    w, h = flat.width, flat.height
    theta = math.radians(angle)
    u = np.array([math.cos(theta), math.sin(theta)]) * w / 2
    v = np.array([-math.sin(theta), math.cos(theta)]) * h / 2
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return np.array([c - u - v, c + u - v, c + u + v, c - u + v])


def _text_item(text, name: str, group: str, kind: str, renderer, owner: str = "") -> _Text | None:
    if text is None or not text.get_visible() or not text.get_text().strip():
        return None
    bbox = text.get_window_extent(renderer)
    if bbox.width <= 0 or bbox.height <= 0 or not np.all(np.isfinite(bbox.get_points())):
        return None
    return _Text(name, group, kind, bbox, _corners(text, bbox, renderer), owner)


def _drawn_ticks(axis) -> list:
    """The ticks matplotlib draws (inside the view interval), major and minor."""
    try:
        return list(axis._update_ticks())
    except Exception:  # noqa: BLE001 - a private API; fall back to the view-interval filter
        lo, hi = sorted(axis.get_view_interval())
        return [t for t in axis.get_major_ticks() + axis.get_minor_ticks() if lo <= t.get_loc() <= hi]


def _axes_texts(ax, name: str, renderer) -> list[_Text]:
    out: list[_Text] = []
    for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        if not axis.get_visible():
            continue
        for tick in _drawn_ticks(axis):
            for lab in (tick.label1, tick.label2):
                item = _text_item(lab, f"{name} {letter} tick label {_plain(lab.get_text())!r}",
                                  f"{id(ax)}:{letter}ticks", "tick", renderer, name)
                if item:
                    out.append(item)
        item = _text_item(axis.label, f"{name} {letter} label {_plain(axis.label.get_text())!r}",
                          f"{id(ax)}:{letter}label", "label", renderer, name)
        if item:
            out.append(item)
    for loc, title in (("", ax.title), ("left ", getattr(ax, "_left_title", None)),
                       ("right ", getattr(ax, "_right_title", None))):
        item = _text_item(title, f"{name} {loc}title", f"{id(ax)}:{loc}title", "title", renderer, name) if title else None
        if item:
            out.append(item)
    for i, t in enumerate(ax.texts):
        item = _text_item(t, f"{name} text {_plain(t.get_text())!r}", f"{id(ax)}:text{i}", "text", renderer, name)
        if item:
            out.append(item)
    return out


def _figure_texts(fig, renderer) -> list[_Text]:
    out: list[_Text] = []
    for attr, what in (("_suptitle", "figure title"), ("_supxlabel", "figure x label"),
                       ("_supylabel", "figure y label")):
        item = _text_item(getattr(fig, attr, None), what, f"fig:{attr}", "label", renderer)
        if item:
            out.append(item)
    sup = {id(getattr(fig, a, None)) for a in ("_suptitle", "_supxlabel", "_supylabel")}
    for i, t in enumerate(t for t in fig.texts if id(t) not in sup):
        item = _text_item(t, f"figure text {_plain(t.get_text())!r}", f"fig:text{i}", "text", renderer)
        if item:
            out.append(item)
    for sub in getattr(fig, "subfigs", []) or []:
        out += _figure_texts(sub, renderer)
    return out


# ------------------------------------------------------------------------------------------ geometry
def _boxes_overlap(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Do two convex quadrilaterals (corners ``(4, 2)``) overlap by more than ``tol`` pixels on every
    separating axis (the separating axis theorem)?"""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            norm = math.hypot(edge[0], edge[1])
            if norm == 0:
                continue
            axis = np.array([-edge[1], edge[0]]) / norm
            pa, pb = a @ axis, b @ axis
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tol:
                return False
    return True


def _bbox_overlap(a, b, tol: float) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > tol and min(a.y1, b.y1) - max(a.y0, b.y0) > tol


def _capped(messages: list[str], what: str) -> list[str]:
    if len(messages) <= MAX_PER_KIND:
        return messages
    return messages[:MAX_PER_KIND] + [f"... and {len(messages) - MAX_PER_KIND} more {what}"]


def _text_overlaps(texts: list[_Text], tol: float) -> list[str]:
    if len(texts) < 2:
        return []
    pts = np.array([[t.bbox.x0, t.bbox.y0, t.bbox.x1, t.bbox.y1] for t in texts])
    ox = np.minimum(pts[:, None, 2], pts[None, :, 2]) - np.maximum(pts[:, None, 0], pts[None, :, 0])
    oy = np.minimum(pts[:, None, 3], pts[None, :, 3]) - np.maximum(pts[:, None, 1], pts[None, :, 1])
    cand = np.argwhere(np.triu((ox > tol) & (oy > tol), k=1))
    tick_pairs: dict[str, list[tuple[_Text, _Text]]] = {}
    other: list[str] = []
    for i, j in cand:
        a, b = texts[i], texts[j]
        if not _boxes_overlap(a.corners, b.corners, tol):
            continue
        if a.group == b.group and a.kind == "tick":
            tick_pairs.setdefault(a.group, []).append((a, b))
        elif a.owner and a.owner == b.owner:
            cut = len(a.owner) + 1
            other.append(f"{a.owner}: {a.name[cut:]} overlaps {b.name[cut:]}")
        else:
            other.append(f"{a.name} overlaps {b.name}")
    out = []
    for pairs in tick_pairs.values():
        a, b = pairs[0]
        axis_name, _, first = a.name.rpartition(" tick label ")
        second = b.name.rpartition(" tick label ")[2]
        more = f" (and {len(pairs) - 1} more pairs)" if len(pairs) > 1 else ""
        out.append(f"{axis_name} tick labels overlap: {first} and {second}{more}")
    counts: dict[str, int] = {}
    for message in other:
        counts[message] = counts.get(message, 0) + 1
    other = [m if n == 1 else f"{m} ({n} times)" for m, n in counts.items()]
    return _capped(out, "overlapping tick label groups") + _capped(other, "overlapping texts")


# ---------------------------------------------------------------------------------------------- data
def _in_data_coords(artist, ax) -> bool:
    try:
        return artist.get_transform().contains_branch(ax.transData)
    except Exception:  # noqa: BLE001
        return False


def _data_artists(ax) -> list:
    return [a for a in (*ax.lines, *ax.collections, *ax.patches, *ax.images) if a.get_visible()]


def _finite_runs(points: np.ndarray) -> list[np.ndarray]:
    """Split ``(n, 2)`` display points at non-finite rows (a NaN breaks a drawn line)."""
    ok = np.all(np.isfinite(points), axis=1)
    runs, start = [], None
    for i, good in enumerate(ok):
        if good and start is None:
            start = i
        if not good and start is not None:
            runs.append(points[start:i])
            start = None
    if start is not None:
        runs.append(points[start:])
    return runs


def _points_in(points: np.ndarray, box) -> bool:
    if points.size == 0:
        return False
    inside = (points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0) & (points[:, 1] < box.y1)
    return bool(inside.any())


def _polyline_hits(points: np.ndarray, box, *, filled: bool = False) -> bool:
    from matplotlib.path import Path

    for run in _finite_runs(points):
        if _points_in(run, box):
            return True
        if len(run) >= 2 and Path(run).intersects_bbox(box, filled=filled):
            return True
    return False


def _artist_under(artist, ax, box, renderer) -> bool:
    """Does the drawn ``artist`` (a data artist of ``ax``) reach into ``box`` (display pixels)?"""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if isinstance(artist, PathCollection):  # scatter: markers in points at offsets in data coordinates
        offsets = np.asarray(artist.get_offsets(), dtype=float)
        if offsets.size == 0 or not artist.get_offset_transform().contains_branch(ax.transData):
            return False
        pts = artist.get_offset_transform().transform(offsets)
        return _points_in(pts[np.all(np.isfinite(pts), axis=1)], box)
    if not _in_data_coords(artist, ax):
        return False  # reference lines and spans in axes coordinates (axhline, axvspan)
    if isinstance(artist, Line2D):
        pts = artist.get_transform().transform(np.asarray(artist.get_xydata(), dtype=float))
        if artist.get_linestyle() in ("None", "", " ", "none"):
            return _points_in(pts[np.all(np.isfinite(pts), axis=1)], box)
        return _polyline_hits(pts, box)
    if isinstance(artist, Patch):
        ext = artist.get_window_extent(renderer)
        return _bbox_overlap(ext, box, 0.0)
    if hasattr(artist, "get_paths"):
        tr = artist.get_transform()
        filled = not isinstance(artist, LineCollection)
        for path in artist.get_paths():
            verts = np.asarray(path.vertices, dtype=float)
            if verts.size and _polyline_hits(tr.transform(verts), box, filled=filled):
                return True
    return False


def _data_values(artist, ax) -> tuple[np.ndarray, np.ndarray]:
    """x and y values of a data artist in data coordinates (empty where they cannot be read)."""
    from matplotlib.collections import PathCollection
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    empty = np.empty(0)
    if isinstance(artist, AxesImage):
        x0, x1, y0, y1 = artist.get_extent()
        return np.array([x0, x1], dtype=float), np.array([y0, y1], dtype=float)
    scatter = isinstance(artist, PathCollection) and artist.get_offset_transform().contains_branch(ax.transData)
    if not scatter and not _in_data_coords(artist, ax):
        return empty, empty
    try:
        if scatter:
            xy = (artist.get_offset_transform() - ax.transData).transform(np.asarray(artist.get_offsets(), dtype=float))
        elif isinstance(artist, Line2D):
            xy = np.asarray(artist.get_xydata(), dtype=float)
        elif isinstance(artist, Patch):
            xy = (artist.get_transform() - ax.transData).transform(np.asarray(artist.get_path().vertices, dtype=float))
        elif isinstance(artist, PathCollection):
            return empty, empty
        elif hasattr(artist, "get_paths"):
            to_data = artist.get_transform() - ax.transData
            paths = [p.vertices for p in artist.get_paths() if len(p.vertices)]
            xy = to_data.transform(np.concatenate(paths).astype(float)) if paths else np.empty((0, 2))
        else:
            return empty, empty
    except Exception:  # noqa: BLE001 - an artist whose transform does not end in transData
        return empty, empty
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return xy[:, 0][np.isfinite(xy[:, 0])], xy[:, 1][np.isfinite(xy[:, 1])]


# ------------------------------------------------------------------------------------------- checks
def _legends(fig, axes) -> list[tuple[Any, Any]]:
    """``(legend, owning axes or None for a figure legend)`` for every visible legend."""
    out = [(ax.get_legend(), ax) for ax in axes if ax.get_legend() is not None and ax.get_legend().get_visible()]
    out += [(leg, None) for leg in getattr(fig, "legends", []) if leg.get_visible()]
    for sub in getattr(fig, "subfigs", []) or []:
        out += [(leg, None) for leg in getattr(sub, "legends", []) if leg.get_visible()]
    return out


def _artist_name(artist) -> str:
    label = artist.get_label() if hasattr(artist, "get_label") else ""
    kind = type(artist).__name__
    return f"{kind} {label!r}" if label and not label.startswith("_") else kind


def _legend_problems(legend, owner, axes, names, texts, renderer, tol) -> list[str]:
    box = legend.get_window_extent(renderer)
    where = names[id(owner)] if owner is not None else "figure"
    shrunk = box.__class__.from_extents(box.x0 + tol, box.y0 + tol, box.x1 - tol, box.y1 - tol)
    out = []
    for ax in ([owner] if owner is not None else axes):
        if _is_colorbar(ax):
            continue
        clip = ax.bbox
        if not _bbox_overlap(shrunk, clip, 0.0):
            continue
        inner = box.__class__.from_extents(max(shrunk.x0, clip.x0), max(shrunk.y0, clip.y0),
                                           min(shrunk.x1, clip.x1), min(shrunk.y1, clip.y1))
        hit = [a for a in _data_artists(ax) if _artist_under(a, ax, inner, renderer)]
        if hit:
            more = f" and {len(hit) - 1} more" if len(hit) > 1 else ""
            inside = "" if ax is owner else f" in {names[id(ax)]}"
            out.append(f"{where}: the legend covers plotted data{inside} ({_artist_name(hit[0])}{more})")
    corners = np.array([[shrunk.x0, shrunk.y0], [shrunk.x1, shrunk.y0], [shrunk.x1, shrunk.y1], [shrunk.x0, shrunk.y1]])
    for t in texts:
        if _bbox_overlap(t.bbox, shrunk, 0.0) and _boxes_overlap(t.corners, corners, 0.0):
            out.append(f"{where}: the legend overlaps {t.name}")
    return _capped(out, "legend overlaps")


def _has_tick_labels(axis) -> bool:
    return any(lab.get_visible() and lab.get_text().strip()
               for tick in _drawn_ticks(axis) for lab in (tick.label1, tick.label2))


def _label_problems(ax, name: str, fig, renderer) -> list[str]:
    if not ax.axison:
        return []
    if _is_colorbar(ax):
        cb = ax._colorbar
        long_axis = ax.yaxis if getattr(cb, "orientation", "vertical") == "vertical" else ax.xaxis
        return [] if long_axis.label.get_text().strip() else [f"{name} has no label (what its colours mean)"]
    if not _data_artists(ax) or getattr(ax, "name", "rectilinear") != "rectilinear":
        return []  # polar axes and the like label themselves by their ticks
    out = []
    for letter, axis, shared, sup in (("x", ax.xaxis, ax.get_shared_x_axes(), "_supxlabel"),
                                      ("y", ax.yaxis, ax.get_shared_y_axes(), "_supylabel")):
        if not axis.get_visible() or not _has_tick_labels(axis):
            continue
        if axis.label.get_text().strip():
            continue
        siblings = [s for s in shared.get_siblings(ax) if s is not ax]
        sibling_label = any((s.xaxis if letter == "x" else s.yaxis).label.get_text().strip() for s in siblings)
        sups = [getattr(f, sup, None) for f in (fig, getattr(ax, "figure", None)) if f is not None]
        if sibling_label or any(t is not None and t.get_text().strip() for t in sups):
            continue
        out.append(f"{name}: the {letter} axis has no label")
    return out


def _scale_problems(ax, name: str) -> list[str]:
    if _is_colorbar(ax):
        return []
    out = []
    for letter, scale in (("x", ax.get_xscale()), ("y", ax.get_yscale())):
        if scale not in ("log", "symlog", "logit"):
            continue
        values = [(_data_values(a, ax)[0 if letter == "x" else 1]) for a in _data_artists(ax)]
        values = np.concatenate(values) if values else np.empty(0)
        if values.size == 0:
            continue
        lo, hi = float(values.min()), float(values.max())
        if scale == "log" and lo <= 0:
            out.append(f"{name}: log {letter} axis over non-positive data (min {lo:g}); "
                       f"matplotlib drops or clips those values")
        elif scale == "symlog" and lo < 0:
            out.append(f"{name}: symlog {letter} axis over negative data (min {lo:g}, max {hi:g}); "
                       f"use a linear axis, or a log axis on the magnitude")
        elif scale == "logit" and (lo <= 0 or hi >= 1):
            out.append(f"{name}: logit {letter} axis over data outside (0, 1) (min {lo:g}, max {hi:g})")
    return out


def _cut_problems(fig, texts: list[_Text], legends, renderer, tol: float) -> list[str]:
    edge = fig.bbox

    def sides_cut(box) -> list[str]:
        return [side for side, cut in (("left", box.x0 < edge.x0 - tol), ("right", box.x1 > edge.x1 + tol),
                                       ("bottom", box.y0 < edge.y0 - tol), ("top", box.y1 > edge.y1 + tol)) if cut]

    out: list[str] = []
    ticks: dict[str, tuple[str, set, int]] = {}  # tick labels: one message per axis
    for t in texts:
        sides = sides_cut(t.bbox)
        if not sides:
            continue
        if t.kind == "tick":
            axis_name = t.name.rpartition(" tick label ")[0]
            name, seen, count = ticks.get(t.group, (axis_name, set(), 0))
            ticks[t.group] = (name, seen | set(sides), count + 1)
        else:
            out.append(f"{t.name} is cut at the figure's {' and '.join(sides)} edge")
    for name, seen, count in ticks.values():
        axes_name, _, letter = name.rpartition(" ")
        sides = [s for s in ("left", "right", "bottom", "top") if s in seen]
        out.append(f"{axes_name}: {count} {letter} tick label{'s' if count > 1 else ''} cut at the figure's "
                   f"{' and '.join(sides)} edge")
    for leg, owner in legends:
        sides = sides_cut(leg.get_window_extent(renderer))
        if sides:
            where = f" of {_plain(owner.get_title())!r}" if owner is not None and owner.get_title() else ""
            out.append(f"the legend{where} is cut at the figure's {' and '.join(sides)} edge")
    return _capped(out, "texts cut at the edge")
