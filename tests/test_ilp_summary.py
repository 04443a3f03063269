"""Study summaries on hand-made per-seed results (no model): metrics keys, signal validation."""
import numpy as np
import pandas as pd
import pytest

from epi_utils.ilp import explorer, study, summary


def _table(seed):
    rows = []
    causes = ["conflict", "missing_knowledge", "inconsistency", "forgetting", "rare_complex", None]
    for i, cause in enumerate(causes * 4):
        learned = i >= 18 and cause is None
        rows.append(dict(sample_id=f"t/{i}", task="fact_qa" if i % 2 else "sorting", stage=0, template_id="m",
                         prompt=f"p{i}", response="r", planted_cause=cause, learned=learned,
                         planted=cause or "none", incons_flag=cause == "inconsistency",
                         overwrite_later=cause == "forgetting", rarity_group_share=0.01 if cause == "rare_complex" else 0.5,
                         rarity_target_len_z=0.0, conflict_flag=cause == "conflict",
                         probe_category="unknown" if cause == "missing_knowledge" else "known",
                         diagnosis=None if learned else (cause or "unexplained"), evidence="-"))
    t = pd.DataFrame(rows).set_index("sample_id")
    t.loc[t["learned"], "diagnosis"] = np.nan
    return t


def _results():
    out = []
    for seed in (0, 1, 2):
        rec = [dict(seed=seed, cause="conflict", arm="fix", n=4, recovery_rate=0.5 + 0.1 * seed, heldout_delta=0.0),
               dict(seed=seed, cause="conflict", arm="control", n=4, recovery_rate=0.0, heldout_delta=0.01)]
        out.append(study.SeedResult(seed=seed, table=_table(seed), heldout_accuracy=0.8, task_heldout={},
                                    recovery_rows=rec, stage_end_eval=[], timings={"sft": 1.0}))
    return out


def test_perfect_diagnosis_gives_macro_f1_one_and_metrics():
    res = _results()
    diag = study.diagnosis_summary(res)
    assert diag["macro_f1"] == pytest.approx(1.0)
    assert diag["confusion"].loc["none", "unexplained"] == 3 * 3       # 3 unlearned unplanted per seed
    cfg = study.StudyConfig()
    m = summary.headline_metrics(res, diag, cfg)
    assert m["unlearned_rate"] == pytest.approx(23 / 24)
    assert m["diagnosis_confusion"]["conflict"]["conflict"] == 12
    assert m["recovery_rate"]["conflict_fix"] == pytest.approx(0.6)
    assert m["recovery_rate_conflict_control"] == 0.0 and "recovery_rate_conflict_fix_ci95" in m
    assert "the targeted fix beats" in summary.mitigation_text([r for x in res for r in x.recovery_rows])
    val = summary.signal_validation(res, cfg)
    assert (val["precision"] == 1.0).all() and (val["recall"] == 1.0).all()
    assert "meets the 0.85 target" in summary.diagnosis_text(diag)
    assert explorer.confusion_notes(diag["confusion"]) == ["no off-diagonal confusions"]
    assert len(explorer.explorer_table(study.pooled_table(res), limit=5)) == 5
