"""Statistics with numbers worked out by hand."""
import numpy as np
import pytest

from epi_utils.stats import bootstrap_ci, mean_ci, summarize_over_seeds, t_ci, with_ci


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


def test_with_ci_and_nan_handling():
    out = with_ci("acc", [0.5, float("nan"), 0.5])
    assert out == {"acc": 0.5, "acc_ci95": [0.5, 0.5]}
    assert mean_ci([1, 3])["mean"] == 2.0
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1, 2], confidence=1.5)


def test_summarize_over_seeds_groups():
    rows = [{"policy": "a", "seed": 0, "acc": 0.2}, {"policy": "a", "seed": 1, "acc": 0.4},
            {"policy": "b", "seed": 0, "acc": 1.0}]
    table = summarize_over_seeds(rows, group_keys=["policy"], value_keys=["acc"])
    a = table[table.policy == "a"].iloc[0]
    assert a["mean"] == pytest.approx(0.3) and a["n"] == 2
    assert table[table.policy == "b"].iloc[0]["ci_low"] == 1.0
    with pytest.raises(KeyError, match="group key"):
        summarize_over_seeds(rows, group_keys=["nope"])
