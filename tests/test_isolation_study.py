"""Study 02 tables and verdicts on hand-made run records; its config; the HF data path."""
import numpy as np
import pytest

from epi_utils.isolation_study import Config, summary
from epi_utils.isolation_study.study import Result, RunRecord
from epi_utils.workbench.contract import ConfigError

ST = [("a",), ("b",)]


def _rec(method, seed, ratio, r0a, r1a, r1b, *, tr=None):
    """R[0] = {a: r0a}, R[1] = {a: r1a, b: r1b} on test; train scores = test unless ``tr``."""
    test = [{"a": r0a, "b": 0.0}, {"a": r1a, "b": r1b}]
    return RunRecord(method=method, seed=seed, ratio=ratio, ewc_lambda=None, tuning=False, stage_tasks=ST,
                     test=test, train=tr or test, moved_owned_stage0=0.0 if ratio else float("nan"))


def _records():
    recs = []
    for seed, base in enumerate((0.2, 0.3, 0.4)):
        recs.append(_rec("full_sft", seed, None, 0.8, base, 0.9))
        recs.append(RunRecord(method="separate", seed=seed, ratio=None, ewc_lambda=None, tuning=False,
                              stage_tasks=ST, test=[{"a": 0.0, "b": 0.95}], train=[{"a": 0.0, "b": 0.95}]))
        # epi_frozen retains 0.3, 0.3, 0.4 more than cpi_after_stage at 20%; plasticity equal up to +-0.01
        recs.append(_rec("cpi_after_stage", seed, 0.2, 0.8, base, 0.85 + 0.01 * (seed - 1)))
        recs.append(_rec("epi_frozen", seed, 0.2, 0.8, base + (0.3, 0.3, 0.4)[seed], 0.85 - 0.01 * (seed - 1)))
    recs.append(RunRecord(method="ewc", seed=0, ratio=None, ewc_lambda=10.0, tuning=True, stage_tasks=ST,
                          val=[{"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}]))
    return recs


def test_run_table_by_hand():
    df = summary.run_table(_records(), ST)
    assert len(df) == 12                                             # the tuning run is not a result
    f = df[(df.method == "full_sft") & (df.seed == 1)].iloc[0]
    assert f.learned0 == 0.8 and f.retained0 == 0.3 and f.forgetting0 == pytest.approx(0.5)
    assert f.plastic == 0.9 and f.final == pytest.approx(0.6)       # (0.3 + 0.9) / 2
    s = df[(df.method == "separate") & (df.seed == 2)].iloc[0]
    # one model per stage: stage 0 kept at full SFT's 0.8 after stage 0; stage 1 from its own run
    assert s.retained0 == 0.8 and s.forgetting0 == 0.0 and s.plastic == 0.95 and s.final == pytest.approx(0.875)
    assert np.isnan(s.ratio) and df[df.method == "epi_frozen"].ratio.eq(0.2).all()


def test_frontier_table_t_interval_over_seeds():
    fr = summary.frontier_table(summary.run_table(_records(), ST)).set_index("arm")
    row = fr.loc["full_sft"]
    # retained0 = 0.2, 0.3, 0.4: mean 0.3, sd 0.1, t_{0.975, 2} = 4.3027 -> half-width 0.2484
    assert row.retained0 == pytest.approx(0.3) and row.retained0_high - row.retained0 == pytest.approx(0.24841, abs=1e-4)
    assert row.n == 3 and row.unit == "seeds" and np.isnan(row.ratio)
    assert fr.loc["epi_frozen@20%"].retained0 == pytest.approx(0.6333333)


def test_paired_verdicts_and_equal_plasticity_as_data():
    df = summary.run_table(_records(), ST)
    cmp = summary.frontier_comparisons(df)
    r = cmp[(cmp.ratio == 0.2) & (cmp.metric == "retained0")].iloc[0]
    # per-seed differences 0.3, 0.3, 0.4: mean 0.3333, sd 0.0577 -> half-width 4.3027 * 0.0577 / sqrt(3) = 0.1434
    assert (r.a_method, r.b_method) == ("epi_frozen", "cpi_after_stage")
    assert r["diff"] == pytest.approx(1 / 3) and r.detectable == pytest.approx(0.14343, abs=1e-4)
    assert r.diff_high - r["diff"] == pytest.approx(0.14343, abs=1e-4)
    assert r.verdict == "a_better" and r.n == 3
    p = cmp[(cmp.ratio == 0.2) & (cmp.metric == "plastic")].iloc[0]
    assert p.verdict == "no_difference" and p["diff"] == pytest.approx(0.0)  # -0.02, 0, +0.02
    pooled = cmp[cmp.ratio.isna() & (cmp.metric == "retained0")].iloc[0]
    assert pooled["diff"] == pytest.approx(1 / 3)                   # one ratio: pooled = that ratio
    eq = summary.equal_plasticity(cmp)
    row = eq[eq.ratio == 0.2].iloc[0]
    assert bool(row.equal_plasticity) and bool(row.epi_retains_more) and row.retained0_verdict == "a_better"
    bounds = summary.bound_comparisons(df).set_index(["a_method", "metric"])
    # separate - full_sft on retained0: 0.6, 0.5, 0.4 -> mean 0.5
    assert bounds.loc[("separate", "retained0"), "diff"] == pytest.approx(0.5)
    assert bounds.loc[("cpi_after_stage", "retained0"), "verdict"] == "no_difference"  # identical: diff 0
    m = summary.headline_metrics(df, cmp, eq, summary.bound_comparisons(df), ewc_lambda=10.0, ewc_tuning=[],
                                 pretrain={"n_params": 5, "losses": [1.0]})
    ef = m["arms"]["epi_frozen@20%"]
    assert ef["n"] == 3 and ef["unit"] == "seeds" and m["n_epi_retains_more"] == 1
    # epi_frozen's retained0 = 0.5, 0.6, 0.8: mean 0.6333, sd 0.1528 -> half-width 4.3027 * 0.1528 / sqrt(3) = 0.3795
    assert ef["retained0"] == pytest.approx(0.633333, abs=1e-6)
    assert ef["retained0_high"] - ef["retained0"] == pytest.approx(0.37947, abs=1e-4)
    assert "learned0" not in m["arms"]["separate"] or m["arms"]["separate"]["learned0"] == pytest.approx(0.8)
    assert m["pretrain"] == {"n_params": 5}
    names = summary.headline_names(m)
    assert "arms.full_sft.forgetting0" in names and "arms.replay.retained0" not in names


def test_result_frames_metrics_and_headlines():
    recs = _records()
    res = Result(config=Config(), records=recs, ewc_lambda=10.0, ewc_tuning=[{"ewc_lambda": 10.0, "val_score": 0.5}],
                 stage_tasks=ST, pretrain={"n_params": 5}, tuning_seconds=2.0)
    frames = res.frames()
    assert set(frames) == {"runs", "frontier", "memorisation", "frontier_comparisons", "equal_plasticity",
                           "bound_comparisons", "ewc_tuning"}
    assert len(frames["runs"]) == 12 and list(frames["ewc_tuning"].columns) == ["ewc_lambda", "val_score"]
    assert {"diff_low", "diff_high"} <= set(frames["frontier_comparisons"].columns)
    assert not {"low", "high", "ci_low", "ci_high", "ci95"} & set(frames["frontier_comparisons"].columns)
    m = res.metrics()
    assert summary.verdict_counts(m)["n_epi_retains_more"] == 1 and m["ewc"]["lambda"] == 10.0
    for name in res.headlines():                                     # dotted keys present in the metrics
        node = m
        for part in name.split("."):
            node = node[part]
    t = res.timings()
    assert t["seconds/ewc_tuning"] == 2.0 and t["seconds/total"] == pytest.approx(2.0)
    assert "5 parameters" in summary.describe(res) and "13 runs" in summary.describe(res)


def test_study_config_validation():
    for kwargs, message in [({"methods": ["magic"]}, "Config.methods: must be one of"),
                            ({"ratios": [0.0, 0.5]}, "Config.ratios: must be > 0 (got 0.0)"),
                            ({"ratios": [0.5, 1.0]}, "Config.ratios: must be < 1 (got 1.0)"),
                            ({"bounds": ["separate"]}, "Config.bounds: must contain 'full_sft'"),
                            ({"model_size": "huge"}, "Config.model_size: must be one of ['default', 'small']"),
                            ({"ewc_lambdas": [1.0, 10.0], "n_val_per_task": 0}, "Config.n_val_per_task: must be >= 1"),
                            ({"replay_samples": 0}, "Config.replay_samples: must be >= 1 when the replay bound"),
                            ({"world_tasks": ["fact_qa"]}, "Config.world_tasks: needs at least two tasks"),
                            ({"data_source": "hf", "hf_tasks": ["gsm8k"]}, "Config.hf_tasks: needs at least two"),
                            ({"hf_tasks": ["gsm8k", "mmlu"]}, "Config.hf_tasks: must be one of"),
                            ({"world_tasks": ["fact_qa", "magic"]}, "Config.world_tasks: must be one of")]:
        with pytest.raises(ConfigError) as info:
            Config(**kwargs)
        assert str(info.value).startswith(message), (kwargs, str(info.value))
    assert Config(replay_samples=0, bounds=["full_sft"]).replay_samples == 0
    cfg = Config(seed=3, n_seeds=2, ratios=[0.05, 0.5])
    assert cfg.seeds == (3, 4) and cfg.ratios == (0.05, 0.5) and cfg.tasks == cfg.world_tasks
    assert cfg.replace(data_source="hf").tasks == ("gsm8k", "codealpaca")


def test_hf_world_from_local_files(tmp_path):
    """The gpu profile's data path on local JSONL files in the data sets' layouts (the rehearsal's path)."""
    from epi_utils.isolation_study.hf_data import hf_world
    from epi_utils.workbench.rehearsal import write_local_samples

    gsm = [{"question": f"q{i}", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(10)]
    code = [{"instruction": f"do {i}", "input": "x" if i % 2 else "", "output": " ".join(["w"] * 300)} for i in range(10)]
    files = {"gsm8k": write_local_samples("openai/gsm8k", gsm, tmp_path),
             "codealpaca": write_local_samples("sahil2801/CodeAlpaca-20k", code, tmp_path)}
    w = hf_world(["gsm8k", "codealpaca"], n_train=4, n_heldout=2, n_stages=2, seed=0, data_files=files)
    assert len(w.split("train")) == 8 and len(w.split("heldout", task="gsm8k")) == 2
    assert w.stage_tasks() == [("gsm8k",), ("codealpaca",)]
    g = w.split("train", task="gsm8k")[0]
    assert "####" in g.response and "+ 1 =" in g.response       # the reasoning stays in the target
    assert len(w.split("train", task="codealpaca")[0].response.split()) == 256
    small = hf_world(["gsm8k", "codealpaca"], n_train=2000, n_heldout=200, data_files=files)
    assert len(small.split("train", task="gsm8k")) == 9 and len(small.split("heldout", task="gsm8k")) == 1
    with pytest.raises(ValueError, match="unknown HF tasks"):
        hf_world(["mmlu"])


def test_tost_equivalence_by_hand():
    """d = 0.01, -0.02, 0.03, 0.00: mean 0.005, sd = sqrt(1.3e-3 / 3) = 0.020817, se = 0.010408;
    90% interval 0.005 +- t_{0.95,3} 2.35336 * se = [-0.019495, 0.029495]."""
    a = {0: 0.51, 1: 0.48, 2: 0.53, 3: 0.50}
    b = {0: 0.50, 1: 0.50, 2: 0.50, 3: 0.50}
    eq = summary.tost(a, b, margin=0.05, unit="seeds", metric="plastic")
    assert eq.diff == pytest.approx(0.005) and eq.n == 4
    assert (eq.diff_low, eq.diff_high) == (pytest.approx(-0.019495, abs=1e-6), pytest.approx(0.029495, abs=1e-6))
    # the binding test is the upper one: P(T_3 < (0.005 - 0.05) / 0.010408 = -4.3235) = 0.0114
    assert eq.equivalent and eq.p_value == pytest.approx(0.011404, abs=1e-5)
    narrow = summary.tost(a, b, margin=0.02, unit="seeds")     # 0.0295 > 0.02: not shown equivalent
    assert not narrow.equivalent and narrow.p_value == pytest.approx(0.12260, abs=1e-4)
    assert not summary.tost({0: 0.5}, {0: 0.5}, margin=0.1, unit="seeds").equivalent   # one unit: no test
    same = summary.tost({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}, margin=0.01, unit="seeds")
    assert same.equivalent and same.p_value == 0.0
    with pytest.raises(ValueError, match="margin"):
        summary.tost(a, b, margin=0.0, unit="seeds")
    with pytest.raises(ValueError, match="only one side"):
        summary.tost(a, {0: 0.5}, margin=0.1, unit="seeds")


def test_detectable_effect_at_80_percent_power_by_hand():
    """n = 8, sd = 0.1: (t_{0.975,7} 2.364624 + t_{0.8,7} 0.896030) * 0.1 / sqrt(8) = 0.115282; the 95%
    half-width 2.364624 * 0.1 / sqrt(8) = 0.083602 is detected with only ~53% power."""
    d = summary.detectable_effect(0.1, 8)
    assert d == pytest.approx(0.115282, abs=1e-6)
    assert summary.paired_power(d, 0.1, 8) == pytest.approx(0.80, abs=0.01)
    assert summary.paired_power(0.083602, 0.1, 8) == pytest.approx(0.531, abs=0.005)
    assert summary.paired_power(0.0, 0.1, 8) == pytest.approx(0.05, abs=1e-9)   # no effect: the test's level
    with pytest.raises(ValueError, match="n >= 2"):
        summary.detectable_effect(0.1, 1)


def test_mask_turnover_release_and_overlap_by_hand():
    from epi_utils.isolation_study import masks

    h = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)
    # refresh 1 keeps element 1 and adds element 2: half the new set is new; overlap 1 of 3
    assert masks.turnover(h[0], h[1]) == 0.5 and masks.jaccard(h[0], h[1]) == pytest.approx(1 / 3)
    assert masks.turnover(h[0], h[0]) == 0.0 and masks.jaccard(h[0] & False, h[0] & False) == 1.0
    # ever protected {0, 1, 2}; released: 0 (at refresh 1) and 2 (at refresh 2) -> 2/3; re-protected: 0 -> 1/2
    assert masks.release_and_reprotect(h) == {"ever_protected": 3.0, "released": pytest.approx(2 / 3),
                                              "reprotected": 0.5}
    steady = masks.release_and_reprotect(np.array([[1, 0], [1, 0]], dtype=bool))
    assert steady["released"] == 0.0 and np.isnan(steady["reprotected"])
    t = masks.turnover_table({"a": h}, steps=[10, 20, 30])
    assert t["turnover"].tolist() == [0.5, 0.5] and t["step"].tolist() == [20, 30] and t["size"].tolist() == [2, 2]
    o = masks.overlap_table({"a": h[0], "b": h[1]})
    assert o.loc["a", "b"] == pytest.approx(1 / 3) and o.loc["a", "a"] == 1.0
    with pytest.raises(TypeError, match="boolean"):
        masks.turnover(np.array([1, 0]), np.array([1, 0]))


def test_tables_without_a_static_mask_have_empty_comparisons():
    """A grid with EPI alone (or bounds alone) has no EPI-vs-static pair: empty tables, zero counts, no crash."""
    recs = [r for r in _records() if r.method != "cpi_after_stage"]
    res = Result(config=Config(), records=recs, ewc_lambda=None, ewc_tuning=[], stage_tasks=ST, pretrain={})
    f = res.frames()
    assert f["frontier_comparisons"].empty and f["equal_plasticity"].empty and f["ewc_tuning"].empty
    assert "diff_low" in f["frontier_comparisons"].columns and "equal_plasticity" in f["equal_plasticity"].columns
    m = res.metrics()
    assert m["n_pairs"] == m["n_epi_retains_more"] == m["pooled_n_pairs"] == 0 and m["frontier_comparisons"] == []
    from epi_utils.isolation_study import figures

    figures.plot_paired(f["frontier_comparisons"])
    figures.plot_ewc_tuning(f["ewc_tuning"], None)
