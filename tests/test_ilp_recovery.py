"""Recovery computation on hand-made before/after sets, and detection rates by hand."""
import pandas as pd
import pytest

from epi_utils.ilp import detection as dt
from epi_utils.ilp import recovery as rc


def test_recovery_rate_by_hand():
    after = {"a": True, "b": False, "c": True, "d": False, "e": True}
    assert rc.recovery_rate(["a", "b", "c", "d"], after) == 0.5
    assert rc.recovery_rate(["a", "a", "b"], after) == 0.5       # duplicates counted once
    with pytest.raises(rc.RecoveryInputError, match="empty"):
        rc.recovery_rate([], after)
    with pytest.raises(rc.RecoveryInputError, match="no result after"):
        rc.recovery_rate(["zz"], after)


def test_recovery_rows_by_hand():
    ids = ["a", "b", "c", "d"]
    row = rc.recovery_row(seed=0, cause="conflict", arm="fix", unlearned_before=ids,
                          correct_after={"a": True, "b": True, "c": True, "d": False}, heldout_before=0.5,
                          heldout_after=0.6)
    assert row["recovery_rate"] == pytest.approx(0.75) and row["heldout_delta"] == pytest.approx(0.1)
    empty = rc.recovery_row(seed=0, cause="forgetting", arm="fix", unlearned_before=[], correct_after={})
    assert empty["n"] == 0 and empty["recovery_rate"] != empty["recovery_rate"]      # NaN: undefined


def test_unlearned_rates_and_subset_gap_by_hand():
    t = pd.DataFrame({"learned": [True, False, True, True, True, False], "task": list("aabbbb"),
                      "template_id": ["x", "x", "y", "y", "z", "z"]})
    r = dt.unlearned_rates(t)
    assert r.loc["all", "unlearned_rate"] == pytest.approx(2 / 6)
    assert r.loc["a", "unlearned_rate"] == 0.5 and r.loc["b", "unlearned_rate"] == 0.25
    gaps = dt.subset_gaps(t, by=("template_id",), min_size=2, worst_k=1)
    assert gaps.loc[0, "accuracy"] == 0.5 and gaps.loc[0, "gap"] == pytest.approx(4 / 6 - 0.5)
    with pytest.raises(dt.DetectionInputError, match="not in the table"):
        dt.unlearned_rates(t, by="stage")
