"""Study 05 summaries on planted episode scores: paired comparisons over seeds find the planted effects
with the right verdicts, the detectable effect equals the hand-computed half-width, the pooled
``all`` setting is each seed's mean over the settings, the oracle's headroom sits beside every
threshold difference, intervals over seeds are Student-t by hand, and verdicts are counted as data."""
import math

import numpy as np
import pandas as pd
import pytest

from epi_utils.acd import summary

SEEDS, EPISODES, DS = range(5), 40, "FewAsp(multi)"


def planted_episodes() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for setting in ("5way5shot", "10way5shot"):
        for seed in SEEDS:
            base = rng.uniform(0.4, 0.6, EPISODES)
            wiggle = np.where(np.arange(EPISODES) % 2 == 0, 0.01, -0.01)  # averages to 0 within a seed
            posthoc_shift = -0.02 if setting == "5way5shot" else 0.03
            static = base + 0.05 + rng.normal(0, 0.005, EPISODES)
            f1 = {"protonet": base, "proto_awatt_static": static, "proto_awatt_no_attention": base + 0.01,
                  "proto_awatt_policy_joint": static + wiggle + 0.002 * (seed - 2),
                  "proto_awatt_policy_posthoc": static + posthoc_shift,
                  "proto_awatt_oracle_count": static + (0.01 if setting == "5way5shot" else 0.03) + 0.001 * seed}
            for method, vals in f1.items():
                auc = np.full(EPISODES, 0.7) + (0.01 * (seed - 2) if method != "protonet" else 0.0)
                for e in range(EPISODES):
                    rows.append({"method": method, "setting": setting, "seed": seed, "dataset": DS, "episode": e,
                                 "auc": auc[e], "macro_f1": vals[e], "instance_f1": vals[e], "threshold": 0.3})
    return pd.DataFrame(rows)


def _find(comps, claim, setting, metric="macro_f1"):
    (c,) = [c for c in comps if c["claim"] == claim and c["setting"] == setting and c["metric"] == metric]
    return c


def test_paired_comparisons_find_the_planted_effects():
    comps = summary.paired_comparisons(planted_episodes())
    # (3 threshold claims + 3 attention claims x 2 metrics) x (2 settings + all); no claim without its models
    assert len(comps) == (3 + 3 * 2) * 3 and {c["diff"]["unit"] for c in comps} == {"seeds"}
    assert {c["claim"] for c in comps} == {*summary.THRESHOLD_CLAIMS, "attention_helps", "both_attentions",
                                           "pooling_without_attention"}
    att = _find(comps, "attention_helps", "5way5shot")
    assert att["verdict"] == "a_better" and att["diff"]["mean"] == pytest.approx(0.05, abs=0.003)
    assert att["diff"]["n"] == 5 and att["diff"]["method"] == "t"
    # joint policy: per-seed mean differences -0.004, -0.002, 0, 0.002, 0.004 -> t half-width by hand
    joint = _find(comps, "learned_threshold_joint", "10way5shot")
    half = 2.7764451 * math.sqrt(np.var([-0.004, -0.002, 0, 0.002, 0.004], ddof=1)) / math.sqrt(5)
    assert joint["verdict"] == "no_difference" and joint["diff"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert joint["detectable"] == pytest.approx(half, rel=1e-5)
    assert _find(comps, "learned_threshold_posthoc", "5way5shot")["verdict"] == "b_better"
    # pooled over settings: each seed's mean of -0.02 and +0.03 = +0.005
    assert _find(comps, "learned_threshold_posthoc", "all")["diff"]["mean"] == pytest.approx(0.005, abs=1e-9)
    # oracle: 0.01 + 0.001 seed (5-way) -> mean 0.012; pooled (0.01 + 0.03) / 2 + 0.002 = 0.022
    assert _find(comps, "count_oracle", "5way5shot")["diff"]["mean"] == pytest.approx(0.012, abs=1e-9)
    pooled = _find(comps, "count_oracle", "all")
    assert pooled["diff"]["mean"] == pytest.approx(0.022, abs=1e-9)
    for c in comps:  # the headroom beside every threshold difference is the oracle's own comparison
        if c["claim"] in summary.THRESHOLD_CLAIMS:
            assert c["headroom"] == {k: _find(comps, "count_oracle", c["setting"])["diff"][k] for k in ("mean", "low", "high")}
        else:
            assert "headroom" not in c
    # AUC of Proto-AWATT differs from ProtoNet's by 0.01*(seed-2): mean 0, no difference
    assert _find(comps, "attention_helps", "5way5shot", "auc")["verdict"] == "no_difference"
    assert _find(comps, "both_attentions", "all")["diff"]["mean"] == pytest.approx(0.04, abs=0.003)


def test_claim_verdicts_count_settings_and_keep_the_detectable_effect():
    comps = summary.paired_comparisons(planted_episodes())
    v = summary.claim_verdicts(comps, metric="macro_f1")
    assert v["attention_helps"]["overall"] == "a_better"
    assert v["attention_helps"]["counts"] == {"a_better": 2, "b_better": 0, "no_difference": 0, "not_enough_data": 0}
    assert v["learned_threshold_joint"]["overall"] == "no_difference"
    assert v["learned_threshold_posthoc"]["overall"] == "mixed"
    assert v["learned_threshold_posthoc"]["by_setting"] == {f"{DS}/5way5shot": "b_better", f"{DS}/10way5shot": "a_better",
                                                            f"{DS}/all": "a_better"}
    assert v["learned_threshold_joint"]["largest_detectable"] > 0
    block = summary.claims_metrics(comps)["learned_threshold_posthoc"][DS]["macro_f1"]["5way5shot"]
    assert block["diff_ci95"][1] < 0 and block["verdict"] == "b_better" and block["unit"] == "seeds"
    assert block["headroom"] == pytest.approx(0.012) and block["headroom_ci95"][0] < 0.012 < block["headroom_ci95"][1]
    table = summary.comparison_table(comps)
    assert set(table.verdict) == {"a_better", "b_better", "no_difference"} and "detectable" in table
    assert (table["headroom (oracle - static)"] != "").sum() == 3 * 3


def test_over_seeds_is_a_t_interval_over_seeds_by_hand():
    rows = [{"method": "protonet", "setting": "5way5shot", "dataset": DS, "seed": s, "auc": 0.8, "macro_f1": m,
             "instance_f1": m, "n_episodes": 10} for s, m in enumerate([0.5, 0.6, 0.7])]
    out = summary.over_seeds(pd.DataFrame(rows)).iloc[0]
    half = 4.3026527 * 0.1 / math.sqrt(3)
    assert out.macro_f1 == pytest.approx(0.6)
    assert [out.macro_f1_low, out.macro_f1_high] == pytest.approx([0.6 - half, 0.6 + half], rel=1e-6)
    assert out.n == 3 and out.n_episodes == 10
    head = summary.headline_metrics(summary.over_seeds(pd.DataFrame(rows)))[DS]["protonet"]["5way5shot"]
    assert head["macro_f1_ci95"] == pytest.approx([0.6 - half, 0.6 + half], rel=1e-6) and head["ci_unit"] == "3 seeds (t)"
    table = summary.results_table(summary.over_seeds(pd.DataFrame(rows)))
    assert table.method.tolist() == ["ProtoNet"] and list(table.columns[:3]) == ["dataset", "setting", "method"]


def test_per_class_f1_by_hand():
    pc = pd.DataFrame([{"method": "m", "dataset": "d", "setting": "s", "seed": 0, "class_name": "a", "tp": 3, "fp": 1, "fn": 1},
                       {"method": "m", "dataset": "d", "setting": "s", "seed": 1, "class_name": "a", "tp": 1, "fp": 0, "fn": 2},
                       {"method": "m", "dataset": "d", "setting": "s", "seed": 0, "class_name": "b", "tp": 0, "fp": 0, "fn": 0}])
    out = summary.per_class_f1(pc, method="m", dataset="d").set_index("class")
    assert out.loc["a", "f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 3)) and out.loc["b", "f1"] == 0.0
