"""Statistics with numbers worked out by hand."""
import numpy as np
import pytest

from epi_utils.workbench.stats import Verdict, bootstrap_ci, compare, interval, interval_table, t_ci


def test_constant_values_give_degenerate_interval():
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7)
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def test_two_values_bootstrap_quantiles():
    # Resampling two values {0, 1}: the mean is 0 with p=1/4, 0.5 with p=1/2, 1 with p=1/4,
    # so the 2.5% quantile is 0 and the 97.5% quantile is 1.
    lo, hi = bootstrap_ci([0.0, 1.0], n_boot=20_000, rng=1)
    assert (lo, hi) == (0.0, 1.0)


def test_interval_contains_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = rng.normal(size=5)
    large = rng.normal(size=500)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s
    assert (hi_l - lo_l) < (hi_s - lo_s)


def test_t_interval_by_hand():
    # mean 2, sample sd 1, t_{0.975, 2} = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138
    lo, hi = t_ci([1.0, 2.0, 3.0])
    assert lo == pytest.approx(2 - 2.484138, abs=1e-5)
    assert hi == pytest.approx(2 + 2.484138, abs=1e-5)


def test_nan_handling():
    iv = interval([0.5, float("nan"), 0.5], unit="seeds")
    assert (iv.mean, iv.low, iv.high, iv.n, iv.method) == (0.5, 0.5, 0.5, 2, "t")
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1, 2], confidence=1.5)


def test_interval_table_by_hand():
    import pandas as pd

    frame = pd.DataFrame({"arm": ["b", "b", "b", "a", "a"], "unit": [0, 1, 2, 0, 0],
                          "acc": [1.0, 2.0, 3.0, 0.5, float("nan")]})
    table = interval_table(frame, by=["arm"], columns=["acc"], unit="seeds")
    assert list(table.columns) == ["arm", "acc", "acc_low", "acc_high", "n", "unit"]
    assert list(table.arm) == ["b", "a"]                         # order of first appearance
    b = table.iloc[0]
    # mean 2, sample sd 1, t_{0.975, 2} = 4.302653: half width 4.302653 / sqrt(3) = 2.484138
    assert b["acc"] == 2.0 and b["acc_low"] == pytest.approx(2 - 2.484138, abs=1e-5) and b["n"] == 3
    a = table.iloc[1]                                            # one value left: no interval
    assert a["acc"] == 0.5 and np.isnan(a["acc_low"]) and a["n"] == 1 and a["unit"] == "seeds"


@pytest.mark.parametrize("n", [3, 8])
def test_interval_over_seeds_holds_its_coverage(n):
    # 2,000 draws of n normal values (mean 1, sd 2): the 95% interval must cover the true mean
    # 93-97% of the time. (A percentile bootstrap over 3 values covers ~75%: the reason for t.)
    rng = np.random.default_rng(12345)
    hits = 0
    for _ in range(2000):
        iv = interval(rng.normal(1.0, 2.0, size=n), unit="seeds")
        assert iv.method == "t"
        hits += iv.low <= 1.0 <= iv.high
    assert 0.93 <= hits / 2000 <= 0.97


def test_bootstrap_over_three_seeds_undercovers_and_is_refused():
    rng = np.random.default_rng(7)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (bootstrap_ci(rng.normal(size=3), n_boot=500, rng=rng)
                                              for _ in range(400)))
    assert hits / 400 < 0.85  # the failure mode this module exists to avoid
    with pytest.raises(ValueError, match="under-covers"):
        interval([1.0, 2.0, 3.0], unit="seeds", method="bootstrap")
    with pytest.raises(ValueError, match="unit"):
        interval([1.0, 2.0], unit="")


def test_interval_label_and_auto_bootstrap_for_many_units():
    iv = interval(np.arange(40, dtype=float), unit="episodes")
    assert iv.method == "bootstrap" and iv.n == 40 and iv.mean == pytest.approx(19.5)
    assert interval([1.0, 2.0, 3.0], unit="seeds").label() == "95% t-interval over 3 seeds"


def test_compare_paired_by_hand():
    # a - b = [1, 2, 3]: mean 2, sd 1, t_{0.975,2} = 4.302653 -> [2 - 2.484138, 2 + 2.484138];
    # t statistic 2 / (1 / sqrt 3) = 3.4641, two-sided p with 2 dof = 0.074179.
    c = compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], unit="seeds", metric="acc", a_name="epi", b_name="sft")
    assert c.diff.mean == pytest.approx(2.0)
    assert c.diff.low == pytest.approx(2 - 2.484138, abs=1e-5)
    assert c.diff.high == pytest.approx(2 + 2.484138, abs=1e-5)
    assert c.p_value == pytest.approx(0.074179, abs=1e-5)
    assert c.verdict is Verdict.NO_DIFFERENCE
    assert c.detectable == pytest.approx(2.484138, abs=1e-5)
    assert "smallest detectable" in c.sentence() and "3 seeds" in c.sentence()
    assert c.to_dict()["verdict"] == "no_difference"


def test_compare_pairing_beats_overlap_and_direction():
    # Large shared seed effect, small consistent gain: unpaired intervals overlap, paired is clear.
    a = [0.50, 0.70, 0.90, 0.60]
    b = [0.48, 0.68, 0.88, 0.58]
    assert compare(a, b, unit="seeds").verdict is Verdict.A_BETTER
    assert compare(a, b, unit="seeds", paired=False).verdict is Verdict.NO_DIFFERENCE
    # lower is better (e.g. forgetting): a lower a is A_BETTER
    assert compare(b, a, unit="seeds", higher_is_better=False).verdict is Verdict.A_BETTER
    assert compare(a, b, unit="seeds", higher_is_better=False).verdict is Verdict.B_BETTER


def test_compare_mappings_and_errors():
    c = compare({"s1": 1.0, "s0": 3.0}, {"s0": 1.0, "s1": 0.0}, unit="seeds")
    assert c.diff.mean == pytest.approx(1.5)  # paired on keys: (3-1, 1-0)
    with pytest.raises(ValueError, match="only one side"):
        compare({"s0": 1.0}, {"s1": 1.0}, unit="seeds")
    with pytest.raises(ValueError, match="3 vs 2"):
        compare([1, 2, 3], [1, 2], unit="seeds")
    assert compare([1.0], [0.0], unit="seeds").verdict is Verdict.NOT_ENOUGH_DATA


def test_plots_matrix_has_colour_bar_no_grid_and_checks_shape():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from epi_utils.workbench import plots

    fig, ax = plt.subplots()
    plots.matrix(ax, [[1, 2], [3, 4]], xlabels=["a long label", "b"], ylabels=["x", "y"], cbar_label="count")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "count"
    assert not any(line.get_visible() for line in ax.get_xgridlines())
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="do not match"):
        plots.matrix(ax, [[1, 2]], xlabels=["a"], ylabels=["x"])
    plt.close(fig)
