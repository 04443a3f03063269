"""Study 02 metrics and study 01 drift tables on hand-made records."""
import types

import numpy as np
import pytest
import torch

from epi_utils.epi import importance_snapshots as snaps
from epi_utils.epi import isolation_study as study


def _world():
    cfg = types.SimpleNamespace(tasks=("a", "b"), n_stages=2)
    return types.SimpleNamespace(config=cfg, stage_tasks=lambda: [("a",), ("b",)])


def _rows():
    rows = []
    for seed, (ma, mb, sa, sb) in enumerate([(0.5, 0.3, 0.7, 0.5), (0.4, 0.4, 0.6, 0.4)]):
        rows.append({"policy": "epi", "schedule": "mixed", "seed": seed, "task": None, "ablation": None,
                     "acc": [{"a": ma, "b": mb}], "prob": [{"a": ma, "b": mb}]})
        # sequential: after stage 0 a=0.8 b=0.1; after stage 1 a=0.5 b=0.6
        rows.append({"policy": "epi", "schedule": "sequential", "seed": seed, "task": None, "ablation": None,
                     "acc": [{"a": 0.8, "b": 0.1}, {"a": 0.5, "b": 0.6}], "prob": [{"a": 0.8, "b": 0.1},
                                                                                  {"a": 0.5, "b": 0.6}]})
        for t, v in (("a", sa), ("b", sb)):
            rows.append({"policy": "full_sft", "schedule": "single", "seed": seed, "task": t, "ablation": None,
                         "acc": [{t: v}], "prob": [{t: v}]})
    return rows


def test_run_metrics_by_hand():
    m = study.run_metrics(_rows(), _world()).set_index("seed")
    # seed 0: single (0.7, 0.5) - mixed (0.5, 0.3) -> interference 0.2; heldout 0.4
    assert m.loc[0, "interference"] == pytest.approx(0.2) and m.loc[0, "heldout_acc"] == pytest.approx(0.4)
    # seed 1: single (0.6, 0.4) - mixed (0.4, 0.4) -> 0.1
    assert m.loc[1, "interference"] == pytest.approx(0.1) and m.loc[1, "heldout_acc"] == pytest.approx(0.4)
    # R = [[0.8, 0.1], [0.5, 0.6]]: ACC 0.55, BWT 0.5 - 0.8 = -0.3, forgetting 0.3
    assert m.loc[0, "seq_acc"] == pytest.approx(0.55)
    assert m.loc[0, "seq_bwt"] == pytest.approx(-0.3) and m.loc[0, "seq_forgetting"] == pytest.approx(0.3)
    assert m.loc[0, "seq_acc_prob"] == pytest.approx(0.55)
    head = study.headline(m.reset_index())
    assert head["epi"]["interference"] == pytest.approx(0.15)
    assert head["epi"]["seq_bwt_ci95"] == pytest.approx([-0.3, -0.3])


def test_epi_verdict_uses_interval_overlap():
    head = {"epi": {"seq_acc": 0.6, "seq_acc_ci95": [0.55, 0.65], "interference": 0.1, "interference_ci95": [0.0, 0.2]},
            "full_sft": {"seq_acc": 0.4, "seq_acc_ci95": [0.35, 0.45], "interference": 0.15,
                         "interference_ci95": [0.1, 0.2]},
            "ewc": {"seq_acc": 0.8, "seq_acc_ci95": [0.7, 0.9]}}
    v = study.epi_verdict(head)
    assert "seq_acc: EPI 0.600 beats full_sft 0.400" in v
    assert "seq_acc: EPI 0.600 is beaten by ewc 0.800" in v
    assert "interference: EPI 0.100 is not distinguishable from full_sft 0.150" in v


def test_study_config_validation():
    with pytest.raises(ValueError, match="policies"):
        study.StudyConfig(policies=("magic",))
    with pytest.raises(ValueError, match="eval_split"):
        study.StudyConfig(eval_split="test")


def _snap(step, bits, sample):
    return {"step": step, "masks": {"all": {"w": torch.tensor(bits, dtype=torch.bool)}},
            "sample": {"all": torch.tensor(sample)}}


def test_drift_table_and_seed_noise_by_hand():
    a = [_snap(10, [1, 1, 0, 0], [1.0, 2.0, 3.0, 4.0]), _snap(20, [0, 1, 1, 0], [1.0, 3.0, 2.0, 4.0])]
    b = [_snap(10, [1, 0, 0, 1], [4.0, 3.0, 2.0, 1.0]), _snap(20, [0, 1, 1, 0], [1.0, 2.0, 3.0, 4.0])]
    t = snaps.drift_table(a).set_index("step")
    assert t.loc[10, "jaccard_first"] == 1.0 and t.loc[20, "jaccard_first"] == pytest.approx(1 / 3)
    assert t.loc[20, "spearman_first"] == pytest.approx(0.8) and t.loc[20, "turnover_prev"] == 0.5
    n = snaps.seed_noise(a, b).set_index("step")
    assert n.loc[10, "jaccard"] == pytest.approx(1 / 3) and n.loc[20, "jaccard"] == 1.0
    assert n.loc[10, "spearman"] == pytest.approx(-1.0)
    heat = snaps.layer_share_matrix(a)
    assert heat.loc["other", 10] == 0.5


def test_hf_world_with_a_stub_loader(monkeypatch):
    """The gpu profile's data path, with ``datasets.load_dataset`` stubbed (no hub access here)."""
    import datasets

    from epi_utils.epi.isolation_hf import hf_world

    def fake(ds_id, conf=None, split=None):
        if "gsm8k" in ds_id:
            return [{"question": f"q{i}", "answer": f"work #### {i}"} for i in range(10)]
        return [{"instruction": f"do {i}", "input": "", "output": f"out {i}"} for i in range(10)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    w = hf_world(["gsm8k", "codealpaca"], n_train=4, n_heldout=2, n_stages=2, seed=0)
    assert len(w.split("train")) == 8 and len(w.split("heldout", task="gsm8k")) == 2
    assert w.stage_tasks() == [("gsm8k",), ("codealpaca",)]
    g = w.split("train", task="gsm8k")[0]
    assert g.response == g.prompt[1:]  # "q7" -> "7": only the final answer after ####
    assert [len(s) for s in w.stages()] == [4, 4] and len(w.mixed()[0]) == 8
    with pytest.raises(ValueError, match="unknown HF tasks"):
        hf_world(["mmlu"])
