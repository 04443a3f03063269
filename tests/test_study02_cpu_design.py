"""Study 02 at CPU scale: the study's world, train/held-out evaluation rows, ablations, conclusions."""
import types

import pytest

from epi_utils.epi import isolation_study as study
from epi_utils.data.world import WorldConfig, build_world


def test_study_world_config_subset_and_clean_tasks():
    cfg = study.study_world_config(tasks=["fact_qa", "arithmetic", "format_conversion", "key_lookup"],
                                   n_train_per_task=12, n_heldout_per_task=4)
    assert cfg.tasks == ("fact_qa", "arithmetic", "format_conversion", "key_lookup")
    assert cfg.inconsistency_rate == cfg.rare_complex_rate == cfg.missing_knowledge_rate == cfg.conflict_rate == 0
    w = build_world(cfg)
    assert w.stage_tasks() == [("fact_qa", "arithmetic"), ("format_conversion", "key_lookup")]
    planted = {s.planted_cause for s in w.split("train")} - {None}
    assert planted == {"forgetting"}                       # only the sequential-schedule overwrite copies
    # round(0.1 * 12) = 1 forgetting sample per stage-0 task, each with one interference copy in stage 1
    assert sum(s.interferes_with is not None for s in w.split("train")) == 2
    assert len(w.mixed()[0]) == 4 * 12 and len(w.split("heldout")) == 4 * 4
    # the default world (studies 01 and 03) is untouched by this helper
    assert WorldConfig().tasks[0] == "fact_qa" and WorldConfig().rare_complex_rate == 0.1


def _world():
    cfg = types.SimpleNamespace(tasks=("a", "b"), n_stages=2)
    return types.SimpleNamespace(config=cfg, stage_tasks=lambda: [("a",), ("b",)])


def _row(policy, schedule, acc, *, seed=0, task=None, ablation=None, heldout=None, **kw):
    return {"policy": policy, "schedule": schedule, "seed": seed, "task": task, "ablation": ablation,
            "acc": acc, "prob": acc, "acc_heldout": heldout or acc, "eval_split": "train", **kw}


def test_train_split_metrics_and_heldout_by_hand():
    rows = [_row("epi", "mixed", [{"a": 0.9, "b": 0.7}], heldout=[{"a": 0.2, "b": 0.0}]),
            _row("epi", "sequential", [{"a": 1.0, "b": 0.0}, {"a": 0.25, "b": 0.75}]),
            _row("full_sft", "single", [{"a": 1.0}], task="a"), _row("full_sft", "single", [{"b": 0.9}], task="b")]
    m = study.run_metrics(rows, _world()).iloc[0]
    assert m["mixed_acc"] == pytest.approx(0.8)            # (0.9 + 0.7) / 2 on the train split
    assert m["heldout_acc"] == pytest.approx(0.1)          # (0.2 + 0.0) / 2 on held-out samples
    assert m["interference"] == pytest.approx(0.15)        # ((1.0 - 0.9) + (0.9 - 0.7)) / 2
    assert "heldout_acc_prob" not in m or m["heldout_acc_prob"] != m["heldout_acc_prob"]
    # R = [[1.0, 0.0], [0.25, 0.75]]: ACC 0.5, BWT -0.75, forgetting 0.75
    assert m["seq_acc"] == pytest.approx(0.5) and m["seq_bwt"] == pytest.approx(-0.75)
    assert m["seq_forgetting"] == pytest.approx(0.75)


def test_ablation_table_both_schedules_by_hand():
    rows = [_row("full_sft", "single", [{"a": 1.0}], task="a"), _row("full_sft", "single", [{"b": 1.0}], task="b"),
            _row("epi", "mixed", [{"a": 0.5, "b": 1.0}], ablation="isolation_ratio", isolation_ratio=0.2,
                 heldout=[{"a": 0.5, "b": 0.5}]),
            _row("epi", "sequential", [{"a": 0.8, "b": 0.0}, {"a": 0.4, "b": 1.0}], ablation="isolation_ratio",
                 isolation_ratio=0.2)]
    t = study.ablation_table(rows, _world()).set_index("schedule")
    assert t.loc["mixed", "interference"] == pytest.approx(0.25) and t.loc["mixed", "heldout_acc"] == pytest.approx(0.5)
    assert t.loc["sequential", "seq_forgetting"] == pytest.approx(0.4)
    assert t.loc["sequential", "seq_acc"] == pytest.approx(0.7)
    assert t.loc["mixed", "value"] == 0.2 and t.loc["mixed", "seq_acc"] != t.loc["mixed", "seq_acc"]  # NaN
    with pytest.raises(ValueError, match="ablation_schedules"):
        study.run_study(None, study.StudyConfig(), ablation_schedules=("single",))


def test_conclusions_decided_only_when_intervals_apart():
    head = {"full_sft": {"mixed_acc": 0.9, "mixed_acc_ci95": [0.85, 0.95],
                         "seq_forgetting": 0.6, "seq_forgetting_ci95": [0.5, 0.7]},
            "epi": {"mixed_acc": 0.8, "mixed_acc_ci95": [0.7, 0.9],
                    "seq_forgetting": 0.3, "seq_forgetting_ci95": [0.2, 0.4]}}
    lines = study.conclusions(head, study.epi_verdict(head, baselines=("full_sft",)))
    assert "the model does the tasks after SFT" in lines[0]
    assert any(l.startswith("seq_forgetting (lower is better): epi leads, decided") for l in lines)
    assert any(l.startswith("mixed_acc (higher is better): full_sft leads, NOT decided") for l in lines)
    assert any("EPI beats a baseline in 1 and is beaten in 0 of 2" in l for l in lines)
    low = study.conclusions({"full_sft": {"mixed_acc": 0.1, "mixed_acc_ci95": [0.0, 0.2]}}, [])
    assert "NOT learned" in low[0]
