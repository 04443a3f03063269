"""Baselines of the study 03 diagnosis on hand-made tables: the no-model rules, the cascade without the
knowledge probe, and their scores against the cascade over worlds (no model is trained)."""
import pandas as pd
import pytest

from epi_utils.ilp import baselines, records
from epi_utils.ilp.diagnosis import DiagnosisInputError


def _table():
    # a: duplicate prompt; b: stage-0 sample (two stages); c: prompt retrained later with another target;
    # d: last-stage fact question that the probe calls a conflict; e: last-stage reversal of a rare form
    return pd.DataFrame({
        "task": ["reversal", "reversal", "fact_qa", "fact_qa", "reversal"],
        "stage": [1, 0, 1, 1, 1],
        "incons_flag": [True, False, False, False, False],
        "overwrite_later": [False, False, True, False, False],
        "probe_category": ["known", "known", "known", "conflict", "known"],
        "rarity_ratio": [1.0, 1.0, 1.0, 1.0, 0.1],
        "rarity_target_len_z": [0.0] * 5,
        "dyn_stage_forgotten": [False, True, False, False, False],
        "learned": [False] * 5,
        "planted_cause": ["inconsistency", None, None, "conflict", "rare_complex"],
    }, index=pd.Index(list("abcde"), name="sample_id"))


def test_rules_baseline_by_hand():
    got = baselines.rules_baseline(_table())
    assert got.tolist() == ["inconsistency", "forgetting", "forgetting", "missing_knowledge", "rare_complex"]
    with pytest.raises(DiagnosisInputError, match="'task'"):
        baselines.rules_baseline(_table().drop(columns=["task"]))


def test_cascade_without_probe_never_names_a_knowledge_cause():
    t = _table()
    got = baselines.cascade_without_probe(t)
    assert got["d"] == "unexplained"                     # the full cascade says conflict (probe_category)
    assert got[["a", "b", "c", "e"]].tolist() == ["inconsistency", "forgetting", "forgetting", "rare_complex"]


def test_baselines_read_no_generator_field():
    t = _table()
    scrambled = t.assign(planted_cause=["conflict", "rare_complex", None, None, "inconsistency"],
                         template_id=["x1", "x2", "x3", "x4", "x5"])
    pd.testing.assert_series_equal(baselines.rules_baseline(t), baselines.rules_baseline(scrambled))
    pd.testing.assert_series_equal(baselines.cascade_without_probe(t), baselines.cascade_without_probe(scrambled))


def _record(seed, *, cascade_right):
    t = _table()
    t["truth"] = ["inconsistency", "forgetting", "forgetting", "conflict", "rare_complex"]
    t["diagnosis"] = t["truth"] if cascade_right else "unexplained"
    return records.SeedRecord(seed=seed, table=t, stages=[], heldout_accuracy=1.0, base_recall={})


def test_baseline_scores_and_table_by_hand():
    scores = baselines.baseline_scores([_record(0, cascade_right=True), _record(1, cascade_right=True)])
    s0 = scores[scores["seed"] == 0].set_index("method")
    # cascade perfect: F1 1 for the four causes present, NaN (no support, no prediction) for missing knowledge
    assert s0.loc["cascade", "macro_f1"] == pytest.approx(1.0)
    # rules: inconsistency, forgetting x2, rare right; conflict truth -> missing_knowledge:
    # conflict F1 0 (missed), missing knowledge F1 0 (false positive) -> (1 + 1 + 1 + 0 + 0) / 5
    assert s0.loc["rules_baseline", "macro_f1"] == pytest.approx(3 / 5)
    # without the probe: conflict -> unexplained: F1 conflict 0, missing knowledge NaN -> 3 / 4
    assert s0.loc["cascade_without_probe", "macro_f1"] == pytest.approx(3 / 4)
    table = baselines.baseline_table(scores)
    assert table.loc["cascade", "n"] == 2 and table.loc["cascade", "unit"] == "worlds"
    assert table.loc["rules_baseline", "diff"] == pytest.approx(0.4)
    assert table.loc["cascade", "diff"] == pytest.approx(0.0)
