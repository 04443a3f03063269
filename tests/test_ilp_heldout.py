"""Issue 28 on hand-made data (no model): measured knowledge truth, the settings family, the
leave-settings-out scores and the focused control of the mitigations."""
import numpy as np
import pandas as pd
import pytest

from epi_utils.ilp import Config, heldout, records, settings, study, summary

CAUSES = ["conflict", "missing_knowledge", "inconsistency", "forgetting", "rare_complex"]


def test_conflict_truth_needs_a_base_model_that_knows_the_fact():
    t = pd.DataFrame({"planted_cause": ["conflict", "conflict", None, None, "missing_knowledge", None],
                      "stage": [1, 1, 1, 1, 1, 1], "learned": [False, False, False, False, False, True],
                      "dyn_learned_in_stage": [0.0] * 6,
                      "truth_base_knows": [1.0, 0.0, 0.0, np.nan, np.nan, 0.0]})
    # known fact -> conflict; unknown -> missing knowledge (also for an unplanted fact question);
    # not measured -> the planted label; learned rows stay learned
    assert study.truth_labels(t).tolist() == ["conflict", "missing_knowledge", "missing_knowledge", "none",
                                              "missing_knowledge", "learned"]
    assert study.truth_labels(t.drop(columns="truth_base_knows")).tolist()[:3] == ["conflict", "conflict", "none"]


def test_settings_family_is_drawn_by_a_seed_and_warm_settings_keep_the_base_model():
    cfg = Config(n_entities=12, n_train_per_task=20, n_heldout_per_task=2)
    a = settings.family(cfg, n=4, seed=5, cold=False, warm_seeds=2)
    assert a == settings.family(cfg, n=4, seed=5, cold=False, warm_seeds=2)
    assert a != settings.family(cfg, n=4, seed=6, cold=False, warm_seeds=2)
    assert all(s.seed in (0, 1) and s.n_entities == 12 and s.pretrain_epochs == cfg.pretrain_epochs
               and s.pretrain_fact_fraction == cfg.pretrain_fact_fraction and s.tasks[-1] == "fact_qa" for s in a)
    cold = settings.family(cfg, n=6, seed=5, cold=True, warm_seeds=2)
    assert [s.seed >= 2 for s in cold] == [False, True] * 3
    assert cold[1].pretrain_epochs == 10 and (cold[1].n_entities, cold[1].pretrain_fact_fraction) == (12, 0.75)
    assert (cold[3].n_entities, cold[3].pretrain_fact_fraction) == (19, 0.5) and cold[3].pretrain_epochs == 25
    assert cold[5].pretrain_epochs == 25 and cold[5].n_entities == 12
    applied = a[0].apply(cfg)
    assert applied.tasks == a[0].tasks and applied.conflict_rate == a[0].conflict_rate


def _table(seed, *, signal_ok=True):
    """Unlearned rows whose one feature (``probe_x``) encodes the cause (when ``signal_ok``)."""
    rows = []
    for i, cause in enumerate(CAUSES * 6):
        rows.append(dict(sample_id=f"w{seed}/{i}", task="fact_qa", stage=1, prompt=f"p{i}", response="r",
                         learned=False, truth=cause, diagnosis=cause if i % 3 else "unexplained", evidence="-",
                         incons_flag=cause == "inconsistency", probe_x=float(CAUSES.index(cause)) if signal_ok else 0.0,
                         rarity_ratio=1.0, rarity_target_len_z=0.0, rarity_target_len_rz=0.0))
    return pd.DataFrame(rows).set_index("sample_id")


def _rec(seed, setting="default"):
    return records.SeedRecord(seed=seed, table=_table(seed), stages=[], heldout_accuracy=0.5, base_recall={},
                              setting=setting, setting_text="-")


def test_leave_settings_out_scores_every_method_on_both_parts():
    fit = [_rec(0), _rec(1), _rec(2)]
    held = [_rec(0, "setting0"), _rec(1, "setting1")]
    scores = heldout.evaluate(fit, held, thresholds=study.thresholds(Config()), trees=10)
    assert set(scores["part"]) == {"fitting", "held out"}
    assert len(scores) == 5 * len(heldout.METHODS)
    h = scores[scores["part"] == "held out"].set_index(["unit", "method"])
    # the forest reads the one informative feature: perfect on the held-out settings
    assert h.loc[("setting0", "forest"), "macro_f1"] == pytest.approx(1.0)
    # the cascade column: 2 of every 3 rows right, the rest unexplained -> recall 2/3, precision 1, F1 0.8
    assert h.loc[("setting0", "cascade"), "macro_f1"] == pytest.approx(0.8)
    pooled = heldout.pooled_table(scores).set_index(["part", "method"])
    assert pooled.loc[("held out", "forest"), "diff_vs_cascade"] == pytest.approx(0.2)
    assert pooled.loc[("held out", "forest"), "unit"] == "settings"
    cmp = heldout.better_method(scores)
    assert cmp is not None and cmp.diff.mean == pytest.approx(0.2)


def test_focused_control_comparison_by_hand():
    recs = []
    for seed in range(3):
        rec = [records.RecoveryRecord(seed, "conflict", "fix", 4, 0.5 + 0.1 * seed, 0.8),
               records.RecoveryRecord(seed, "conflict", "focused", 4, 0.4, 0.8),
               records.RecoveryRecord(seed, "conflict", "control", 4, 0.1, 0.8),
               records.RecoveryRecord(seed, "rare_complex", "fix", 2, 0.5, 0.8),
               records.RecoveryRecord(seed, "rare_complex", "control", 2, 0.0, 0.8)]
        recs.append(records.SeedRecord(seed=seed, table=_table(seed), stages=[], heldout_accuracy=0.5,
                                       base_recall={}, recovery=rec))
    uniform = summary.mitigation_comparisons(recs)
    focused = summary.mitigation_comparisons(recs, against="focused")
    assert set(uniform) == {"conflict", "rare_complex"} and set(focused) == {"conflict"}
    assert focused["conflict"].diff.mean == pytest.approx(0.2)   # mean of 0.1, 0.2, 0.3
    tab = summary.mitigation_table(uniform, focused)
    assert tab.loc["conflict", "focused"] == pytest.approx(0.4)
    assert np.isnan(tab.loc["rare_complex", "diff_focused"])


def _copy(rec, **kw):
    return records.SeedRecord(seed=kw.get("seed", rec.seed), table=rec.table.copy(), stages=[], heldout_accuracy=0.5,
                              base_recall={}, setting=kw.get("setting", rec.setting), setting_text="-")


def test_forest_diagnosis_is_fitted_only_on_other_worlds_and_never_reads_the_diagnosed_worlds_truth():
    """The study's diagnosis (issue 28): each world by a forest fitted on the other worlds' labels. Scrambling
    a world's own truth changes none of its diagnoses; relabelling the *other* worlds does (so the test can fail)."""
    base = [_rec(0), _rec(1), _rec(2)]
    held = _rec(0, "setting0")

    def diagnose(fit, h):
        fit, h = [_copy(r) for r in fit], _copy(h)
        heldout.apply_diagnosis(fit, [h], seed=0, trees=10)
        return fit, h

    fit, h = diagnose(base, held)
    d0 = fit[0].table["diagnosis"]
    assert (fit[0].table["diagnosed_by"] == "forest").all() and (d0 == fit[0].table["truth"]).all()
    assert (fit[0].table["cascade"] == base[0].table["diagnosis"]).all()       # the cascade stays beside it
    assert "2 other world(s) (default/1, default/2)" in fit[0].table["evidence"].iloc[0]
    assert "3 other world(s)" in h.table["evidence"].iloc[0]                   # held out: the whole default design
    rng = np.random.default_rng(0)
    scrambled = [_copy(r) for r in base]
    scrambled[0].table["truth"] = rng.permutation(scrambled[0].table["truth"].to_numpy())
    held_scr = _copy(held)
    held_scr.table["truth"] = rng.permutation(held_scr.table["truth"].to_numpy())
    fit_s, h_s = diagnose(scrambled, held_scr)
    pd.testing.assert_series_equal(fit_s[0].table["diagnosis"], d0)
    pd.testing.assert_series_equal(h_s.table["diagnosis"], h.table["diagnosis"])
    rotate = dict(zip(CAUSES, CAUSES[1:] + CAUSES[:1]))
    others = [_copy(r) for r in base]
    for r in others[1:]:
        r.table["truth"] = r.table["truth"].map(rotate)
    assert not fit_s[0].table["diagnosis"].equals(diagnose(others, held)[0][0].table["diagnosis"])


def test_a_world_with_no_other_world_to_fit_on_keeps_the_cascade():
    one = _copy(_rec(0))
    heldout.apply_diagnosis([one], [], seed=0, trees=10)
    assert one.table["diagnosed_by"].str.startswith("cascade (no forest").all()
    pd.testing.assert_series_equal(one.table["diagnosis"], one.table["cascade"], check_names=False)


def test_diagnosing_the_default_design_first_and_the_settings_later_writes_the_tables_of_one_pass():
    """run_study diagnoses its default design as soon as it is done (to start the mitigations) and the
    held-out settings when they are: the same tables as one pass over both, and ``only`` writes no
    other world's table."""
    base, held = [_rec(0), _rec(1), _rec(2)], [_rec(0, "setting0"), _rec(1, "setting1")]
    fit1, held1 = [_copy(r) for r in base], [_copy(r) for r in held]
    heldout.apply_diagnosis(fit1, held1, seed=0, trees=10)
    fit2, held2 = [_copy(r) for r in base], [_copy(r) for r in held]
    forests = heldout.apply_diagnosis(fit2, [], seed=0, trees=10)
    assert all("forest" not in r.table.columns for r in held2)
    before = [r.table.copy() for r in fit2]
    forests.update(heldout.apply_diagnosis(fit2, held2, seed=0, trees=10, only=held2))
    for a, b, c in zip(fit1 + held1, fit2 + held2, before + [None, None]):
        pd.testing.assert_frame_equal(a.table, b.table)
        if c is not None:
            pd.testing.assert_frame_equal(b.table, c)
    # the scores reuse the study's forests: the same table as forests fitted again
    th = study.thresholds(Config())
    pd.testing.assert_frame_equal(heldout.evaluate(fit2, held2, thresholds=th, trees=10, forests=forests),
                                  heldout.evaluate(fit1, held1, thresholds=th, trees=10))
