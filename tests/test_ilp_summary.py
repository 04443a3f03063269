"""Study summaries on hand-made per-world records (no model): scores with intervals, buckets, metrics."""
import numpy as np
import pandas as pd
import pytest

from epi_utils.ilp import explorer, records, summary

CAUSES = ["conflict", "missing_knowledge", "inconsistency", "forgetting", "rare_complex"]


def _table(seed, *, wrong=0):
    """Four unlearned samples per cause and three unlearned 'none' samples, plus three learned ones;
    ``wrong`` missing-knowledge samples are diagnosed as conflict."""
    rows = []
    for i, cause in enumerate(CAUSES * 4 + [None] * 6):
        learned = cause is None and i >= 23
        truth = "learned" if learned else (cause or "none")
        diag = None if learned else (cause or "unexplained")
        rows.append(dict(sample_id=f"t/{i}", task="fact_qa", stage=0, prompt=f"p{i}", response="r",
                         planted_cause=cause, learned=learned, truth=truth, diagnosis=diag, evidence="-",
                         dyn_correctness=0.0, dyn_forgetting_events=0))
    t = pd.DataFrame(rows).set_index("sample_id")
    mk = t.index[t["truth"] == "missing_knowledge"][:wrong]
    t.loc[mk, "diagnosis"] = "conflict"
    return t


def _records(wrong=(0, 0, 0)):
    out = []
    for seed, w in zip((0, 1, 2), wrong):
        rec = [records.RecoveryRecord(seed, "conflict", "fix", 4, 0.5 + 0.1 * seed, 0.8),
               records.RecoveryRecord(seed, "conflict", "control", 4, 0.1 * seed ** 2, 0.8)]
        out.append(records.SeedRecord(seed=seed, table=_table(seed, wrong=w), heldout_accuracy=0.8, base_recall={},
                                    stages=[records.StageRun(0, 10, 1.0, 0.96, True)], recovery=rec,
                                    timings={"sft": 1.0}))
    return out


def test_perfect_diagnosis_gives_macro_f1_one_and_metrics():
    recs = _records()
    diag = summary.diagnosis_summary(recs)
    assert diag.macro_f1.mean == pytest.approx(1.0) and diag.macro_f1.n == 3 and diag.macro_f1.unit == "worlds"
    assert diag.confusion.loc["none", "unexplained"] == 3 * 3
    assert (diag.none_bucket["truth_none"] == 3).all() and (diag.none_bucket["diagnosed_unexplained"] == 3).all()
    manif = summary.manifestation(recs)
    assert manif.loc["conflict", "unlearned_min"] == 4
    assert manif.loc["none", "prevalence"] == pytest.approx(3 / 23)
    assert (manif["prevalence_low"] >= 0).all() and (manif["prevalence_high"] <= 1).all()
    cmp = summary.mitigation_comparisons(recs)
    # paired differences 0.5, 0.5, 0.3: mean 0.433, sd 0.1155, t(2) 4.303 -> half-width 0.287
    assert cmp["conflict"].diff.mean == pytest.approx(1.3 / 3) and cmp["conflict"].a_name == "targeted fix"
    assert cmp["conflict"].detectable == pytest.approx(4.303 * 0.11547 / np.sqrt(3), rel=1e-3)
    metrics, heads = summary.headline_metrics(recs, diag, manif, cmp)
    assert metrics["min_unlearned_per_cause_per_world"] == 4
    assert metrics["mitigation"]["conflict"]["verdict"] == "a_better"
    assert "diagnosis.macro_f1.mean" in heads
    assert len(explorer.explorer_table(summary.pooled_table(recs), limit=5)) == 5


def test_prevalence_interval_stays_inside_zero_one():
    recs = _records()
    t = recs[0].table
    t.loc[t["truth"] == "none", ["learned", "truth", "diagnosis"]] = [True, "learned", None]
    # 'none' makes up 0/20, 3/23, 3/23 of the unlearned samples: mean 0.087, sd 0.0753; a plain t-interval
    # (t(2) = 4.303) would reach 0.087 - 0.187 < 0
    manif = summary.manifestation(recs)
    assert manif.loc["none", "prevalence"] == pytest.approx(2 / 23)
    assert 0.0 <= manif.loc["none", "prevalence_low"] < manif.loc["none", "prevalence"]
    assert manif.loc["none", "prevalence_high"] <= 1.0


def test_scores_by_hand_with_interval_over_worlds():
    # world 0: 2 of 4 missing-knowledge samples diagnosed conflict; worlds 1, 2 perfect
    diag = summary.diagnosis_summary(_records(wrong=(2, 0, 0)))
    # world 0: conflict P = 4/6, R = 1 -> F1 0.8; missing P = 1, R = 0.5 -> F1 2/3
    f1_w0 = (0.8 + 2 / 3 + 1 + 1 + 1) / 5
    assert diag.macro_f1_per_world[0] == pytest.approx(f1_w0)
    assert diag.macro_f1.mean == pytest.approx((f1_w0 + 2) / 3)
    assert diag.per_cause.loc["conflict", "precision"] == pytest.approx((4 / 6 + 2) / 3)
    assert diag.per_cause.loc["conflict", "precision_low"] < diag.per_cause.loc["conflict", "precision"]
    assert diag.macro_f1_close.mean == pytest.approx(1.0)
    assert diag.macro_f1_inferred.mean == pytest.approx(((0.8 + 2 / 3 + 1) / 3 + 2) / 3)
    assert diag.confusion.loc["missing_knowledge", "conflict"] == 2
