"""Intervals on bounded scales (Wilson, logit-scale t): numbers by hand, coverage by simulation, bounds kept."""
import math

import numpy as np
import pandas as pd
import pytest

from epi_utils.workbench.stats import interval, interval_table, logit_t_ci, wilson_ci

Z = 1.959964  # normal quantile at 0.975; z^2 = 3.841459


def test_wilson_by_hand():
    # 0 of 10: centre = (z^2/20) / (1 + z^2/10) = 0.192073 / 1.384146 = 0.138767, half the same -> [0, 0.277535]
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.277533, abs=1e-5)
    # 5 of 10: centre 0.5, half = z sqrt(0.025 + 0.009604) / 1.384146 = 0.263407
    lo, hi = wilson_ci(5, 10)
    assert (lo, hi) == (pytest.approx(0.236593, abs=1e-5), pytest.approx(0.763407, abs=1e-5))
    # 3 of 4: centre = (0.75 + 0.480182) / 1.960365 = 0.627527, half = z sqrt(0.046875 + 0.060023) / 1.960365 = 0.326885
    lo, hi = wilson_ci(3, 4)
    assert (lo, hi) == (pytest.approx(0.300642, abs=1e-5), pytest.approx(0.954413, abs=1e-5))
    assert wilson_ci(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_ci(11, 10)


def test_logit_t_by_hand():
    # [0.8, 0.9, 1.0]: m = 0.9, s = 0.1, se = 0.057735; on the logit scale se / (m (1 - m)) = 0.641500,
    # half = t_{0.975, 2} * 0.641500 = 4.302653 * 0.641500 = 2.760153 around logit(0.9) = 2.197225:
    # expit(-0.562928) = 0.362870, expit(4.957378) = 0.993018. (The t interval is [0.652, 1.148].)
    lo, hi = logit_t_ci([0.8, 0.9, 1.0])
    assert lo == pytest.approx(0.362870, abs=1e-5) and hi == pytest.approx(0.993018, abs=1e-5)
    # the same on a 0..100 scale
    lo, hi = logit_t_ci([80.0, 90.0, 100.0], bounds=(0, 100))
    assert lo == pytest.approx(36.2870, abs=1e-3) and hi == pytest.approx(99.3018, abs=1e-3)
    # symmetric around 0.5 at the centre of the scale: logit(0.5) = 0, se on logit scale = se / 0.25
    lo, hi = logit_t_ci([0.4, 0.5, 0.6])
    half = 4.302653 * (0.1 / math.sqrt(3)) / 0.25
    assert lo == pytest.approx(1 / (1 + math.exp(half)), abs=1e-6) and lo + hi == pytest.approx(1.0)
    # every value at the bound, constant values and one value: the degenerate interval, as t gives
    assert logit_t_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert logit_t_ci([0.3, 0.3]) == (0.3, 0.3)
    assert logit_t_ci([0.7]) == (0.7, 0.7)
    with pytest.raises(ValueError, match="outside bounds"):
        logit_t_ci([0.5, 1.2])


def test_interval_with_bounds_picks_the_method_and_default_changes_nothing():
    iv = interval([0.8, 0.9, 1.0], unit="seeds", bounds=(0, 1))
    assert iv.method == "logit-t" and iv.mean == pytest.approx(0.9) and iv.low == pytest.approx(0.362870, abs=1e-5)
    assert iv.label() == "95% logit-t-interval over 3 seeds"
    yes_no = interval([0.0, 1.0, 1.0, 1.0], unit="episodes", bounds=(0, 1))
    assert yes_no.method == "wilson" and (yes_no.low, yes_no.high) == (pytest.approx(0.300642, abs=1e-5),
                                                                       pytest.approx(0.954413, abs=1e-5))
    many = interval(np.linspace(0.5, 1.0, 40), unit="episodes", bounds=(0, 1))
    assert many.method == "bootstrap" and 0.0 <= many.low <= many.high <= 1.0
    plain = interval([0.8, 0.9, 1.0], unit="seeds")
    assert plain.method == "t" and plain.high == pytest.approx(0.9 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert interval([0.8, 0.9, 1.0], unit="seeds", bounds=(0, 1)).method == "logit-t"
    with pytest.raises(ValueError, match="low < high"):
        interval([0.5, 0.6], unit="seeds", bounds=(1, 0))


@pytest.mark.parametrize("n", [3, 8])
def test_logit_t_holds_its_coverage_near_the_bound_and_stays_inside(n):
    # Per-seed scores from Beta(47.5, 2.5): mean 0.95, sd 0.03, a score near its ceiling. Over 2,000
    # draws the logit-t interval covers the mean 93-97% of the time and never leaves [0, 1]; the t
    # interval over 3 seeds runs past 1 in about 65% of the draws (the "1.013").
    rng = np.random.default_rng(2024)
    hits = outside = t_outside = 0
    for _ in range(2000):
        x = rng.beta(47.5, 2.5, size=n)
        iv = interval(x, unit="seeds", bounds=(0, 1))
        assert iv.method == "logit-t"
        hits += iv.low <= 0.95 <= iv.high
        outside += iv.low < 0.0 or iv.high > 1.0
        t_iv = interval(x, unit="seeds")
        t_outside += t_iv.high > 1.0
    assert 0.93 <= hits / 2000 <= 0.97
    assert outside == 0
    if n == 3:
        assert t_outside / 2000 > 0.5


def test_logit_t_coverage_near_zero():
    # a rare-event rate near its floor (Beta(1, 49): mean 0.02) over 5 seeds
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(2000):
        iv = interval(rng.beta(1.0, 49.0, size=5), unit="seeds", bounds=(0, 1))
        hits += iv.low <= 0.02 <= iv.high
        assert 0.0 <= iv.low <= iv.high <= 1.0
    assert 0.92 <= hits / 2000 <= 0.97


@pytest.mark.parametrize("p,n", [(0.9, 40), (0.1, 20)])
def test_wilson_holds_its_coverage_for_yes_no_units(p, n):
    # one yes/no per unit (e.g. "did this episode's prediction hold"): Wilson covers p 93-97% and stays in [0, 1]
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(2000):
        iv = interval((rng.random(n) < p).astype(float), unit="episodes", bounds=(0, 1))
        assert iv.method == "wilson" and 0.0 <= iv.low <= iv.high <= 1.0
        hits += iv.low <= p <= iv.high
    assert 0.93 <= hits / 2000 <= 0.97


def test_interval_table_with_bounds_stays_inside_and_default_is_unchanged():
    frame = pd.DataFrame({"arm": ["epi"] * 3 + ["sft"] * 3, "seed": [0, 1, 2] * 2,
                          "acc": [0.98, 1.0, 0.96, 0.5, 0.6, 0.7], "held": [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]})
    plain = interval_table(frame, by=["arm"], columns=["acc", "held"], unit="seeds", unit_column="seed")
    assert plain.loc[0, "acc_high"] > 1.0  # the t interval leaves the scale near the ceiling
    bounded = interval_table(frame, by=["arm"], columns=["acc", "held"], unit="seeds", unit_column="seed", bounds=(0, 1))
    assert list(bounded.columns) == list(plain.columns)
    assert bounded["acc"].tolist() == plain["acc"].tolist()  # the means do not move
    for c in ("acc", "held"):
        assert ((bounded[f"{c}_low"] >= 0) & (bounded[f"{c}_high"] <= 1)).all()
    # "held" is yes/no: Wilson with 2 of 3 for epi, 3 of 3 for sft (upper bound exactly 1)
    assert bounded.loc[0, "held_low"] == pytest.approx(wilson_ci(2, 3)[0]) and bounded.loc[1, "held_high"] == 1.0
