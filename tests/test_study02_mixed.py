"""Study 02's mixed design (issue 26): the verdict row by hand, the mask statistics against the
offline definitions, CPI-FT's transplant and merge by hand, EPI frozen after warmup against EPI,
random masks on EPI's schedule, the same tuning budget, and one tiny grid end to end."""
import numpy as np
import pytest
import torch

from epi_utils.isolation.distributed import hooked_steps, synthetic_task_batches, tiny_gpt2
from epi_utils.isolation.policies import make_policy
from epi_utils.isolation_study import Config, masks, mixed, mixed_summary
from epi_utils.workbench.contract import ConfigError


def test_comparison_row_by_hand():
    a = {0: 0.5, 1: 0.6, 2: 0.7}
    b = {0: 0.5, 1: 0.58, 2: 0.69}  # differences 0, 0.02, 0.01: mean 0.01, sd 0.01
    row = mixed_summary.compare_row(a, b, a_name="epi", b_name="epi_warmup_frozen", margin=0.03)
    assert row["diff"] == pytest.approx(0.01)
    # 95% interval 0.01 +- 4.3027 * 0.01 / sqrt(3) = +-0.02484 contains 0; the 90% interval
    # 0.01 +- 2.9200 * 0.00577 = [-0.00686, 0.02686] lies inside +-0.03: equivalent by TOST
    assert row["diff_low"] == pytest.approx(0.01 - 0.024841, abs=1e-5)
    assert row["outcome"] == "equivalent" and row["tost_p"] < 0.05
    # detectable at 80% power: (t_{0.975,2} + t_{0.8,2}) * sd / sqrt(n) = (4.3027 + 1.0607) * 0.01 / sqrt(3)
    assert row["detectable"] == pytest.approx(0.030966, abs=1e-5)
    assert mixed_summary.compare_row(a, b, a_name="x", b_name="y", margin=0.005)["outcome"] == "inconclusive"
    better = mixed_summary.compare_row({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.61, 2: 0.69}, a_name="x", b_name="y",
                                       margin=0.03)
    assert better["outcome"] == "a_better"
    assert "Evolving helps" in mixed_summary.answer_sentence({**better, "margin": 0.03})
    assert mixed_summary.answer_sentence(row).startswith("Evolving makes no difference beyond the margin of 0.030")


class _Policy:
    """A stand-in with the two attributes MaskTrace reads."""

    def __init__(self):
        self.n_mask_updates, self._crit_flat = 0, {}


class _State:
    def __init__(self, step):
        self.step = step


def test_mask_trace_equals_the_offline_definitions():
    rng = np.random.default_rng(0)
    hist = {t: [rng.random(50) < 0.3 for _ in range(5)] for t in ("a", "b")}
    pol = _Policy()
    trace = masks.MaskTrace(pol, ["a", "b"])
    for k in range(5):
        pol._crit_flat = {t: torch.from_numpy(h[k]) for t, h in hist.items()}
        pol.n_mask_updates += 1
        assert trace.update_mask(_State(10 * k)) is None
        trace.update_mask(_State(10 * k))  # no new refresh: nothing recorded twice
    st = trace.stats()
    assert st["n_refreshes"] == 5 and len(st["refreshes"]) == 8
    for t, h in hist.items():
        want = masks.release_and_reprotect(h)
        assert st["per_task"][t]["released"] == pytest.approx(want["released"])
        assert st["per_task"][t]["reprotected"] == pytest.approx(want["reprotected"])
        assert st["per_task"][t]["first_final"] == pytest.approx(masks.jaccard(h[0], h[-1]))
        turns = [r["turnover"] for r in st["refreshes"] if r["task"] == t]
        assert turns == pytest.approx([masks.turnover(h[k - 1], h[k]) for k in range(1, 5)])
    assert st["overlap"] == pytest.approx(masks.jaccard(hist["a"][-1], hist["b"][-1]))


def test_cpi_merge_transplants_cores_and_averages_the_rest():
    base = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        base.weight.zero_()
    models = {}
    for t, delta in (("a", [4.0, 1.0, 0.0, 1.0]), ("b", [0.0, 1.0, 4.0, 3.0])):
        m = torch.nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            m.weight.copy_(torch.tensor([delta]))
        models[t] = m
    merged, cores = mixed.cpi_merge(base, models, 0.25)  # one element per task: the largest normalised move
    # a's core = element 0 (4 / mean 1.5), b's core = element 2 (4 / mean 2): transplanted;
    # elements 1 and 3 take the mean task vector: (1 + 1) / 2 = 1 and (1 + 3) / 2 = 2
    assert merged.weight.detach().tolist() == [[4.0, 1.0, 4.0, 2.0]]
    assert cores["weight"].tolist() == [[True, False, True, False]]
    assert base.weight.detach().abs().sum() == 0  # the base is not touched


def _epi_run(name, tasks=("a", "b"), steps=12):
    torch.manual_seed(0)
    model = tiny_gpt2(seed=1, n_layer=1)
    sched = synthetic_task_batches(vocab=64, n_steps=steps, batch_size=4, seq_len=8, tasks=list(tasks), seed=3)
    kw = dict(tasks=list(tasks), isolation_ratio=0.2, mask_update_interval=2, warmup_steps=2)
    if name == "random_refresh":
        kw["seed"] = 7
    policy = make_policy(name, **kw)
    trace = masks.MaskTrace(policy, list(tasks))
    hooked_steps(model, torch.optim.AdamW(model.parameters(), lr=1e-2), [(t, b, 0) for t, b in sched],
                 hooks=[policy, trace])
    return policy, trace, model


def test_epi_frozen_after_warmup_shares_epi_first_masks_then_stops():
    epi, epi_trace, epi_model = _epi_run("epi")
    frz, frz_trace, frz_model = _epi_run("epi_warmup_frozen")
    assert frz.n_mask_updates == 1 and epi.n_mask_updates > 2
    for t in ("a", "b"):
        assert torch.equal(frz_trace.first[t], epi_trace.first[t])   # the same first masks
        assert torch.equal(frz._crit_flat[t], frz_trace.first[t])    # never refreshed
    assert frz_trace.stats()["refreshes"] == [] and any(r["turnover"] > 0 for r in epi_trace.stats()["refreshes"])
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(epi_model.parameters(), frz_model.parameters()))
    assert moved > 0  # evolving changed the training


def test_random_refresh_redraws_sets_of_the_same_share():
    pol, trace, _ = _epi_run("random_refresh")
    st = trace.stats()
    assert pol.n_mask_updates == 5 and len(st["refreshes"]) == 8  # steps 2, 4, ..., 10 of 12; two tasks
    n = sum(p.numel() for p in tiny_gpt2(seed=1, n_layer=1).parameters())
    assert int(pol._crit_flat["a"].sum()) == round(0.2 * n)
    assert np.mean([r["turnover"] for r in st["refreshes"]]) == pytest.approx(0.8, abs=0.02)  # independent draws


def test_same_tuning_budget_and_mixed_checks():
    with pytest.raises(ConfigError, match="Config.epi_lr_grid: x epi_intervals must give as many tuning runs"):
        Config(lr_grid=[0.001, 0.003, 0.01])
    with pytest.raises(ConfigError, match="Config.epi_warmups: needs one warmup per interval"):
        Config(epi_warmups=[10])
    with pytest.raises(ConfigError, match="Config.arms: must contain 'full_sft'"):
        Config(arms=["epi"])
    cfg = Config(seed=4, n_pretrain_seeds=3, pretrain_seed=0)
    assert [mixed.pretrain_seed_of(cfg, s) for s in cfg.seeds] == [1, 2, 0]


@pytest.fixture(scope="module")
def tiny_result():
    torch.set_num_threads(1)
    cfg = Config(device="cpu", pretrain=False, n_seeds=2, n_train_per_task=8, n_val_per_task=4, n_test_per_task=4,
                 n_train_eval_per_task=2, steps_per_stage=8, batch_size=4, ratios=[0.2],
                 arms=["full_sft", "separate", "epi", "epi_warmup_frozen"], lr_grid=[0.003, 0.01],
                 epi_lr_grid=[0.003], epi_intervals=[2, 3], epi_warmups=[2, 2], workers=1,
                 world_tasks=["format_conversion", "key_lookup"], eval_batch_size=16, capacity_seeds=2,
                 forgetting_seeds=2)
    return mixed.run_mixed(cfg, progress=lambda xs, **kw: xs)


def test_tiny_grid_end_to_end(tiny_result):
    res = tiny_result
    assert set(res.hp) == {"full_sft", "separate", "epi", "epi_warmup_frozen"}
    assert res.hp["epi_warmup_frozen"] == res.hp["epi"]          # the ablation takes EPI's settings
    tuning = res.frames()["tuning"]
    assert tuning.groupby("arm").size().to_dict() == {"full_sft": 2, "separate": 2, "epi": 2}  # the same budget
    assert len(res.records) == 2 * 4 and all(not r.tuning for r in res.records)
    assert all(r.steps == 8 for r in res.records)
    df = res.frames()["runs"]
    assert set(df["task"]) == {"format_conversion", "key_lookup", "mean"}
    m = df[df["task"] == "mean"].set_index(["arm", "seed"])["score"]
    per = df[df["task"] != "mean"].groupby(["arm", "seed"])["score"].mean()
    assert np.allclose(m.sort_index(), per.sort_index())
    ans = res.answer()
    assert ans["a"] == "epi" and ans["b"] == "epi_warmup_frozen" and ans["n"] == 2
    card = res.card()
    assert card.figure == "epi_minus_frozen" and 3 <= len(card.headlines) <= 5
    assert set(res.headlines()) <= set(_flat(res.metrics()))
    # the capacity check: per seed, the all-parameters models (ratio 1) and the critical-set-only models
    caps = res.capacity_records
    assert sorted((r.seed, r.ratio) for r in caps if r.arm == "capacity") == [(0, 0.0), (0, 0.2), (0, 1.0), (1, 0.0),
                                                                             (1, 0.2), (1, 1.0)]
    assert sorted((r.seed, r.ratio) for r in caps if r.arm == "capacity_random") == [(0, 0.2), (1, 0.2)]
    assert all(r.steps == 8 for r in caps if r.ratio == 0.2)        # 2 tasks x 8 // 2 steps, each task alone
    assert all(r.steps == 0 for r in caps if r.ratio == 0.0)        # the floor: the pretrained model as it is
    cap = res.frames()["capacity"]
    assert list(cap["task"]) == ["format_conversion", "key_lookup", "mean"] and (cap["n"] == 2).all()
    assert cap[["random_set", "base_model", "diff_random"]].notna().all().all()
    # the forgetting table: plain EPI and EPI frozen beside the bounds, paired rows per metric
    fg = res.frames()["forgetting"]
    assert set(fg["arm"]) == {"full_sft", "separate", "replay", "epi@20%", "epi_frozen@20%"}
    cmp = res.frames()["forgetting_comparisons"]
    assert len(cmp) == 3 * 3 and set(cmp["metric"]) == {"retained0", "forgetting0", "plastic"}
    assert res.forgetting.config.steps_per_stage == 4 and res.forgetting.config.design == "two_stage"
    assert res.forgetting.config.lr == res.hp["epi"]["lr"]


def test_capacity_table_by_hand():
    """Two seeds; task a: share-only 0.4 / 0.6 vs all-parameters 0.8 / 0.8; task b: 0.2 / 0.2 vs 0.4 / 0.6."""
    from epi_utils.isolation_study import checks

    def rec(seed, ratio, a, b):
        return mixed.MixedRecord(arm="capacity", seed=seed, ratio=ratio, hp={}, tuning=False, pretrain_seed=0,
                                 test={"a": a, "b": b})

    recs = [rec(0, 1.0, 0.8, 0.4), rec(1, 1.0, 0.8, 0.6), rec(0, 0.1, 0.4, 0.2), rec(1, 0.1, 0.6, 0.2),
            rec(0, 0.0, 0.1, 0.0), rec(1, 0.0, 0.3, 0.0)]
    # the control: a random set of the same size, task a 0.2 / 0.5
    recs += [mixed.MixedRecord(arm="capacity_random", seed=s, ratio=0.1, hp={}, tuning=False, pretrain_seed=0,
                               test={"a": a, "b": 0.1}) for s, a in ((0, 0.2), (1, 0.5))]
    t = checks.capacity_table(recs, ["a", "b"]).set_index("task")
    assert t.loc["a", "base_model"] == pytest.approx(0.2) and t.loc["a", "random_set"] == pytest.approx(0.35)
    # critical - random on task a: 0.4 - 0.2 = 0.2, 0.6 - 0.5 = 0.1 -> 0.15; half-width 12.706 * 0.0707 / sqrt(2)
    assert t.loc["a", "diff_random"] == pytest.approx(0.15)
    assert t.loc["a", "diff_random_high"] == pytest.approx(0.15 + 12.706 * 0.070711 / np.sqrt(2), abs=1e-3)
    assert t.loc["a", "share_only"] == pytest.approx(0.5) and t.loc["a", "all_parameters"] == pytest.approx(0.8)
    assert t.loc["a", "diff"] == pytest.approx(-0.3) and t.loc["a", "share_kept"] == pytest.approx(0.625)
    # diffs -0.4, -0.2: mean -0.3, sd 0.1414, t(0.975, 1) = 12.706 -> half-width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert t.loc["a", "diff_low"] == pytest.approx(-0.3 - 1.2706, abs=1e-3)
    assert t.loc["b", "share_kept"] == pytest.approx(0.2 / 0.5)
    # mean over tasks: share-only 0.3 / 0.4, all-parameters 0.6 / 0.7 -> diff -0.3 on both seeds
    assert t.loc["mean", "diff"] == pytest.approx(-0.3) and t.loc["mean", "share_kept"] == pytest.approx(0.35 / 0.65)
    assert checks.capacity_table([], ["a"]).empty


def _flat(d, prefix=""):
    out = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def test_forgetting_rows_name_every_arm_for_the_reader():
    import pandas as pd
    table = pd.DataFrame({"method": ["full_sft", "epi", "epi_frozen", "separate"],
                          "ratio": [float("nan"), 0.05, 0.05, float("nan")], "arm": ["x"] * 4,
                          "unit": ["seed"] * 4, "retained0": [0.1, 0.2, 0.3, 0.4]})
    rows = mixed_summary.forgetting_rows(table)
    assert list(rows["arm"]) == ["full SFT", "EPI at 5%", "EPI frozen (stage-0 set pinned) at 5%", "one model per stage"]
    assert list(rows.columns) == ["arm", "retained0"]


def _runs(pretrain_of):
    import pandas as pd
    scores = {"epi": [0.5, 0.6, 0.7, 0.8], "epi_warmup_frozen": [0.4, 0.6, 0.5, 0.6],
              "full_sft": [0.3, 0.3, 0.3, 0.3], "separate": [0.9, 0.9, 0.9, 0.9]}
    rows = [{"arm": arm, "ratio": 0.05 if arm.startswith("epi") else float("nan"), "seed": s,
             "pretrain_seed": pretrain_of(s), "task": "mean", "score": v[s], "score_train": v[s]}
            for arm, v in scores.items() for s in range(4)]
    return pd.DataFrame(rows)


def test_model_comparisons_average_the_seeds_of_one_pretrained_model_first():
    cmp = mixed_summary.model_comparisons(_runs(lambda s: s % 2), margin=0.03)
    row = cmp[(cmp["a"] == "epi") & (cmp["b"] == "epi_warmup_frozen")].iloc[0]
    # model 0 = seeds 0, 2: EPI 0.6, frozen 0.45 -> 0.15; model 1 = seeds 1, 3: 0.7, 0.6 -> 0.10
    # mean 0.125; sd 0.035355, se 0.025, t(0.975, 1) = 12.706 -> half-width 0.31765
    assert row["n"] == 2 and row["unit"] == "pretrained models"
    assert row["a_mean"] == pytest.approx(0.65) and row["b_mean"] == pytest.approx(0.525)
    assert row["diff"] == pytest.approx(0.125)
    assert row["diff_low"] == pytest.approx(0.125 - 0.31765, abs=1e-4)
    assert row["diff_high"] == pytest.approx(0.125 + 0.31765, abs=1e-4)
    assert row["floor"] == pytest.approx(0.3) and row["ceiling"] == pytest.approx(0.9)
    # every seed its own model: nothing to average, the note instead of a table
    assert not len(mixed_summary.model_comparisons(_runs(lambda s: s), margin=0.03))
    assert "note" in mixed_summary.model_rows(mixed_summary.model_comparisons(_runs(lambda s: s), margin=0.03))
