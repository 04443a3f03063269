"""The figure lint on planted broken figures (each breaks one rule) and on clean ones."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from epi_utils.workbench import plots  # noqa: E402
from epi_utils.workbench.figure_lint import lint_figure  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(ax, x="epoch", y="loss"):
    ax.set_xlabel(x)
    ax.set_ylabel(y)


def test_clean_figure_passes():
    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3), layout="constrained")
    x = np.arange(6)
    a.plot(x, x ** 2, marker="o", label="full SFT")
    a.errorbar(x, x ** 2 + 3, yerr=1.0, capsize=3, label="EPI")
    a.fill_between(x, x ** 2 - 1, x ** 2 + 1, alpha=0.2)
    a.axhline(10, color="grey", ls=":")  # a reference line in axes coordinates is not data under the legend
    a.legend(loc="upper left")
    _labelled(a)
    b.bar(["2-way", "5-way", "10-way"], [0.8, 0.6, 0.4])
    b.set_yscale("log")
    b.set_ylim(0.1, 1)
    _labelled(b, "setting", "macro F1")
    b.set_title("log scale on positive values")
    fig.suptitle("a clean figure")
    # bars start at 0, which a log axis cannot show: a bar chart on a log axis is flagged ...
    assert lint_figure(fig) == ["axes 1 ('log scale on positive values'): log y axis over non-positive data (min 0); "
                                "matplotlib drops or clips those values"]
    # ... points on the same axis are fine
    b.patches[0].remove(), b.patches[0].remove(), b.patches[0].remove()
    b.plot([0, 1, 2], [0.8, 0.6, 0.4], marker="o")
    assert lint_figure(fig) == []


def test_heatmap_with_slanted_labels_and_colour_bar_passes():
    # plots.matrix slants long x labels by 40 degrees: their axis-aligned boxes overlap, the labels do not
    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    plots.matrix(ax, np.arange(12).reshape(3, 4), xlabels=["a long label", "another long one", "third label", "x"],
                 ylabels=["a", "b", "c"], cbar_label="count")
    _labelled(ax, "column", "row")
    assert lint_figure(fig) == []


def test_overlapping_tick_labels_are_found():
    fig, ax = plt.subplots(figsize=(3, 3), layout="constrained")
    ax.plot([0, 1], [0, 1])
    ax.set_xticks([0.0, 0.03], labels=["a long label", "another one"])
    _labelled(ax)
    assert lint_figure(fig) == ["axes 0 x tick labels overlap: 'a long label' and 'another one'"]


def test_legend_over_the_data_is_found():
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    x = np.linspace(0, 1, 50)
    ax.plot(x, np.full_like(x, 0.92), label="flat near the top")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right")
    _labelled(ax)
    assert lint_figure(fig) == ["axes 0: the legend covers plotted data (Line2D 'flat near the top')"]
    # the same data, legend moved below it: clean
    ax.legend(loc="lower right")
    assert lint_figure(fig) == []


def test_legend_over_bars_is_found_between_points_too():
    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3), layout="constrained")
    a.bar(["x", "y", "z"], [1.0, 1.0, 1.0], label="score")
    a.legend(loc="center")
    _labelled(a, "setting", "score")
    # a line whose points all lie outside the legend but whose segment crosses it
    b.plot([0, 1], [0, 1], label="diagonal")
    b.legend(loc="center")
    _labelled(b)
    found = lint_figure(fig)
    assert any(p.startswith("axes 0: the legend covers plotted data (Rectangle") for p in found)
    assert "axes 1: the legend covers plotted data (Line2D 'diagonal')" in found


def test_missing_axis_labels_are_found_and_shared_labels_count():
    fig, ax = plt.subplots(layout="constrained")
    ax.bar(["a", "b"], [1, 2])
    ax.set_ylabel("count")
    assert lint_figure(fig) == ["axes 0: the x axis has no label"]
    fig, axes = plt.subplots(2, 1, sharex=True, layout="constrained")
    for ax in axes:
        ax.plot([1, 2], [3, 4])
        ax.set_ylabel("y")
    axes[1].set_xlabel("step")  # the upper panel shows no x tick labels; its sibling is labelled
    assert lint_figure(fig) == []
    fig, ax = plt.subplots(layout="constrained")
    image = ax.imshow([[1, 2], [3, 4]])
    fig.colorbar(image, ax=ax)
    _labelled(ax, "column", "row")
    assert lint_figure(fig) == ["colour bar 1 has no label (what its colours mean)"]


def test_symlog_over_negative_data_and_log_over_zero_are_found():
    # the study 02 mistake: lambda on a symlog axis over -1e10 .. 1e10
    fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
    ax.plot([-1e10, -1.0, 0.0, 1.0, 1e10], [0.1, 0.2, 0.3, 0.2, 0.1], marker="o")
    ax.set_xscale("symlog")
    _labelled(ax, "EWC lambda", "accuracy")
    found = lint_figure(fig)
    assert "axes 0: symlog x axis over negative data (min -1e+10, max 1e+10); use a linear axis, or a log axis on " \
           "the magnitude" in found
    # symlog over zero and positive values is what symlog is for
    fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
    ax.plot([0.0, 1.0, 10.0, 100.0], [1, 2, 3, 4])
    ax.set_xscale("symlog")
    _labelled(ax)
    assert lint_figure(fig) == []
    # error bars that reach below zero on a log axis
    fig, ax = plt.subplots(layout="constrained")
    ax.errorbar([1, 2, 3], [0.5, 1.0, 2.0], yerr=[0.8, 0.1, 0.1])
    ax.set_yscale("log")
    _labelled(ax)
    assert lint_figure(fig) == ["axes 0: log y axis over non-positive data (min -0.3); matplotlib drops or clips "
                                "those values"]


def test_text_cut_at_the_edge_and_text_over_text_are_found():
    fig, ax = plt.subplots(figsize=(3, 2))  # no layout engine: the default margins are too small here
    ax.plot([0, 1], [0, 1])
    _labelled(ax, "x", "a y label far too long for this small figure")
    found = lint_figure(fig)
    assert "axes 0 y label 'a y label far too long for this small...' is cut at the figure's left and bottom and " \
        "top edge" in found
    assert "axes 0: 5 x tick labels cut at the figure's bottom edge" in found
    fig, (a, b) = plt.subplots(1, 2, figsize=(5, 2.5), layout="constrained")
    for ax in (a, b):
        ax.plot([0, 1], [0, 1])
        _labelled(ax)
    fig.get_layout_engine().set(wspace=0.0, w_pad=0.0)
    assert lint_figure(fig) == []
    fig, (a, b) = plt.subplots(1, 2, figsize=(5, 2.5))
    for ax in (a, b):
        ax.plot([0, 1], [0, 1])
        _labelled(ax)
    fig.subplots_adjust(wspace=0.0, left=0.15, bottom=0.2)  # the panels touch: their tick labels collide
    found = lint_figure(fig)
    assert "axes 0 x tick label '1.0' overlaps axes 1 x tick label '0.0'" in found, found


def test_lint_attaches_a_canvas_to_a_bare_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [1, 4, 9])
    _labelled(ax)
    assert lint_figure(fig) == []


def test_natural_order_and_a_legend_moved_outside_passes():
    settings = ["10-way 10-shot", "5-way 5-shot", "10-way 5-shot", "5-way 10-shot", "5-way 5-shot"]
    assert plots.natural_order(settings) == ["5-way 5-shot", "5-way 10-shot", "10-way 5-shot", "10-way 10-shot"]
    assert sorted(["run 2", "run 10", "Run 1", "run 1.5"], key=plots.natural_key) == ["Run 1", "run 1.5", "run 2", "run 10"]
    # study 05's figure: grouped bars with the legend over them; outside the axes it covers nothing
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    order = plots.natural_order(settings)
    for i, method in enumerate(["proto", "proto + attention", "learned threshold"]):
        ax.bar(np.arange(4) + 0.25 * i, [0.9, 0.8, 0.75, 0.7], 0.25, label=method)
    ax.set_xticks(np.arange(4) + 0.25, order)
    _labelled(ax, "setting", "macro F1")
    ax.legend(loc="upper right")
    assert any("the legend covers plotted data" in p for p in lint_figure(fig))
    plots.legend_outside(ax)
    assert lint_figure(fig) == []
    plots.legend_outside(ax, where="below")
    assert lint_figure(fig) == []
    with pytest.raises(ValueError, match="where"):
        plots.legend_outside(ax, where="inside")


def test_scatter_points_count_as_data_and_polar_axes_need_no_labels():
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    ax.scatter([1, 10, 100], [0.0, 1.0, 2.0], label="runs")
    ax.scatter([90], [1.9], label="chosen")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _labelled(ax)
    ax.legend(loc="upper right")
    found = lint_figure(fig)
    assert "axes 0: log y axis over non-positive data (min 0); matplotlib drops or clips those values" in found
    assert any(p.startswith("axes 0: the legend covers plotted data (PathCollection") for p in found)
    assert not any("log x axis" in p for p in found)
    fig = plt.figure(layout="constrained")
    polar = fig.add_subplot(projection="polar")
    polar.plot([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    assert lint_figure(fig) == []


def test_overlapping_annotations_are_reported_once_per_pair_of_names():
    # study 02's frontier: "5%" labels written on top of each other
    fig, ax = plt.subplots(layout="constrained")
    ax.plot([0, 1], [0, 1])
    for dx in (0.0, 0.01, 0.02):
        ax.annotate("5%", (0.5 + dx, 0.5))
    _labelled(ax)
    assert lint_figure(fig) == ["axes 0: text '5%' overlaps text '5%' (3 times)"]


def test_save_figure_records_the_lint_of_each_figure(tmp_path):
    import json

    import matplotlib.pyplot as plt

    from epi_utils.workbench import plots

    bare, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plots.save_figure(bare, "bare", run_dir=tmp_path, formats=("png",))
    good, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    plots.save_figure(good, "good", run_dir=tmp_path, formats=("png",))
    plt.close("all")
    lint = json.loads((tmp_path / "figures" / "lint.json").read_text())
    assert lint["good"] == [] and any("label" in p for p in lint["bare"])


def test_figure_formats_default_and_environment(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from epi_utils.workbench import plots

    monkeypatch.delenv(plots.FORMATS_ENV, raising=False)
    assert plots.figure_formats() == ("png", "pdf")
    monkeypatch.setenv(plots.FORMATS_ENV, " PNG, svg ")
    assert plots.figure_formats() == ("png", "svg")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plots.save_figure(fig, "quick", run_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "figures").glob("quick.*")) == ["quick.png", "quick.svg"]
    for raw, message in (("png,eps", "unknown: \\['eps'\\]"), ("pdf", "includes png"), ("", "includes png")):
        monkeypatch.setenv(plots.FORMATS_ENV, raw)
        with pytest.raises(ValueError, match=f"EPI_FIGURE_FORMATS={raw!r}.*{message}"):
            plots.figure_formats()
    plt.close("all")
    # outside a Jupyter kernel nothing is displayed and the figure stays open for the caller
    assert not plots._inline_kernel()
