"""The ILP rule cascade on hand-made per-sample tables, the learned variant, validation metrics."""
import numpy as np
import pandas as pd
import pytest

from epi_utils.ilp import diagnosis as dg


def _table():
    base = dict(task="qa", stage=1, learned=False, incons_flag=False, incons_group_size=1, incons_n_targets=1,
                incons_partner=None, incons_max_similarity=0.0, dyn_stage_forgotten=False, overwrite_later=False,
                overwrite_by=None, dyn_forgetting_events=0, dyn_max_in_stage=0.0, probe_category="known",
                probe_target_prob=0.9, probe_base_answer="x", probe_base_conf=0.9, probe_conflict_threshold=0.8,
                rarity_skeleton="the * of * is", rarity_group_size=200, rarity_ratio=1.0, rarity_target_len_z=0.0)
    rows = {
        "incons": dict(incons_flag=True, incons_group_size=2, incons_n_targets=2, incons_partner="p",
                       probe_category="conflict"),                        # inconsistency beats conflict
        "forget": dict(stage=0, dyn_stage_forgotten=True, dyn_forgetting_events=1, dyn_max_in_stage=1.0),
        # memorised for a while, then lost, but the base model never knew the fact: knowledge first
        "fragile": dict(stage=0, dyn_stage_forgotten=True, dyn_forgetting_events=1, dyn_max_in_stage=1.0,
                        probe_category="unknown"),
        "conflict": dict(probe_category="conflict", probe_base_answer="paris"),
        "missing": dict(probe_category="unknown", probe_target_prob=0.01, probe_base_conf=0.3),
        "skill": dict(probe_category="not_applicable"),
        "rare": dict(rarity_skeleton="* sort *", rarity_group_size=9, rarity_ratio=0.04),
        "long": dict(rarity_target_len_z=3.5),
        # a rare form that was reproduced and then lost: forgetting comes first
        "rare_forgot": dict(stage=0, rarity_ratio=0.04, dyn_stage_forgotten=True),
        "overwritten": dict(stage=0, overwrite_later=True, overwrite_by="late/1"),
        "plain": dict(),
        "learned": dict(learned=True, probe_category="conflict"),
    }
    return pd.DataFrame.from_dict({k: {**base, **v} for k, v in rows.items()}, orient="index")


def test_cascade_on_hand_made_table():
    out = dg.diagnose(_table())
    assert "learned" not in out.index
    expect = {"incons": "inconsistency", "forget": "forgetting", "conflict": "conflict", "fragile": "missing_knowledge",
              "missing": "missing_knowledge", "skill": "unexplained", "rare": "rare_complex", "long": "rare_complex",
              "rare_forgot": "forgetting", "overwritten": "forgetting", "plain": "unexplained"}
    assert out["diagnosis"].to_dict() == expect
    assert "2 copies with 2 distinct targets" in out.loc["incons", "evidence"]
    assert "'paris'" in out.loc["conflict", "evidence"]
    assert "later stage (late/1)" in out.loc["overwritten", "evidence"]
    assert "'* sort *' has 9 samples, 0.040 of the task's dominant form" in out.loc["rare", "evidence"]
    assert "never reproduced" in out.loc["rare", "evidence"]


def test_thresholds_are_parameters():
    th = dg.CascadeThresholds(complex_min_len_z=5.0, rare_max_ratio=0.01)
    out = dg.diagnose(_table(), thresholds=th)
    assert out.loc["long", "diagnosis"] == "unexplained" and out.loc["rare", "diagnosis"] == "unexplained"
    off = dg.diagnose(_table(), thresholds=dg.CascadeThresholds(dynamics_forgetting=False, overwrite_is_forgetting=False))
    assert off.loc["forget", "diagnosis"] == "unexplained" and off.loc["overwritten", "diagnosis"] == "unexplained"
    assert off.loc["rare_forgot", "diagnosis"] == "rare_complex"
    with pytest.raises(dg.DiagnosisInputError, match="rare_max_ratio must be in"):
        dg.CascadeThresholds(rare_max_ratio=2.0)
    with pytest.raises(dg.DiagnosisInputError, match="unknown cascade threshold"):
        dg.CascadeThresholds.from_mapping({"rare_share": 0.1})


def test_empty_set_of_unlearned_samples_is_a_clear_error():
    t = _table()
    t["learned"] = True
    with pytest.raises(dg.DiagnosisInputError, match="no unlearned samples among 12"):
        dg.diagnose(t)
    with pytest.raises(dg.DiagnosisInputError, match="no 'learned' column"):
        dg.diagnose(t.drop(columns="learned"))


def test_confusion_precision_recall_macro_f1_by_hand():
    planted = ["conflict", "conflict", "missing_knowledge", "missing_knowledge", "none", "forgetting"]
    diagnosed = ["conflict", "missing_knowledge", "missing_knowledge", "missing_knowledge", "conflict", "forgetting"]
    conf = dg.confusion(planted, diagnosed)
    assert conf.loc["conflict", "conflict"] == 1 and conf.loc["conflict", "missing_knowledge"] == 1
    assert conf.loc["none", "conflict"] == 1 and int(conf.to_numpy().sum()) == 6
    scores = dg.per_cause_scores(conf)
    # conflict: tp 1, diagnosed 2, planted 2 -> P = R = F1 = 0.5
    assert scores.loc["conflict", ["precision", "recall", "f1"]].tolist() == [0.5, 0.5, 0.5]
    # missing: tp 2, diagnosed 3, planted 2 -> P 2/3, R 1, F1 0.8
    assert scores.loc["missing_knowledge", "f1"] == pytest.approx(0.8)
    assert scores.loc["forgetting", "f1"] == 1.0
    assert np.isnan(scores.loc["inconsistency", "f1"])          # neither planted nor diagnosed
    assert dg.macro_f1(conf) == pytest.approx((0.5 + 0.8 + 1.0) / 3)
    with pytest.raises(dg.DiagnosisInputError, match="unknown label"):
        dg.confusion(["conflikt"], ["conflict"])


def test_learned_variant_recovers_a_separable_signal():
    rng = np.random.default_rng(0)
    n = 60
    labels = np.array(["conflict", "rare_complex", "none"] * (n // 3))
    t = pd.DataFrame({"conflict_flag": labels == "conflict", "rarity_group_share": np.where(labels == "rare_complex", 0.01, 0.3),
                      "dyn_confidence": rng.random(n)}, index=[f"s{i}" for i in range(n)])
    pred = dg.learned_diagnosis(t, labels, n_splits=3)
    expect = np.where(labels == "none", "unexplained", labels)
    assert (pred.to_numpy() == expect).mean() >= 0.95
    with pytest.raises(dg.DiagnosisInputError, match="model must be"):
        dg.learned_diagnosis(t, labels, model="svm")
