"""GPU rehearsal of Study 05: the toy FewAsp copy has the real layout, the full-scale token counts
match a hand count, and a rehearsal runs the study's code path with a tiny random BERT (no wall-time
assertion: tests never assert on time; the rehearsal's own time is reported by `epi run --rehearse`)."""
import json

import pytest

from epi_utils.acd import Config, rehearsal, study
from epi_utils.acd.data import load_split


def test_full_scale_tokens_by_hand():
    cfg = Config(settings=["5way5shot"], n_seeds=1, n_query=5, max_epochs=2, train_episodes=10,
                 archs=["protonet", "proto_awatt"], tune_on="FewAsp(multi)", holdout=0.5,
                 eval_datasets=["FewAsp(single)"], encoder="bert")
    sizes = rehearsal.full_scale_tokens(cfg)
    assert sizes["micro_batch"] == 50
    assert sizes["train_tokens"] == 2 * 2 * 10 * 50 * 64                      # archs x epochs x episodes x sentences x len
    assert sizes["forward_tokens"] == (2 * 10 * 50 * 64                      # joint policy: one episode per step
                                       + 2 * 2 * 0.5 * 6261 * 64             # held-out share of multi val per epoch
                                       + 2 * (6261 + 4000) * 64)             # evaluation: tuning split + test


def test_toy_copy_has_the_real_layout(tmp_path):
    root = rehearsal.write_toy_fewasp(tmp_path)
    assert set(json.loads((root / "separate.json").read_text())) == {"train", "validation", "test"}
    split = load_split("FewAsp(single)", "test", root=root)  # validates against separate.json
    assert len(split.classes) == 4 and all(len(v) == 8 for v in split.by_class.values())
    assert rehearsal.TOY_PER_CLASS >= 2 * (2 + 2)  # both halves of a toy split fill a 3way2shot episode of Q = 2


def test_rehearsal_needs_the_bert_encoder(tmp_path):
    with pytest.raises(ValueError, match="encoder"):
        rehearsal.prepare(Config(settings=["5way5shot"], encoder="cnn"), tmp_path)


def test_rehearsal_runs_the_study_and_estimates(tmp_path, monkeypatch):
    monkeypatch.setenv("EPI_CACHE_DIR", str(tmp_path / "cache"))
    cfg = Config(settings=["5way5shot", "10way10shot"], encoder="bert", hidden=128, attn_dim=64, device="cpu",
                 rehearse=True)
    res = rehearsal.rehearse(cfg, progress=lambda it, **kw: it, folder=tmp_path)
    est = res.estimate
    assert res.config.settings == ("3way2shot",) and res.config.n_seeds == 1
    assert {r.arch for r in res.training} == {"protonet", "proto_awatt"}
    assert est["rehearsal"]["steps"] == 2 * 4 * len(res.training[0].epoch_seconds)
    assert set(res.episode_frame().method) == {"protonet", "proto_awatt_static", *study.POLICY_METHODS,
                                               "proto_awatt_oracle_count"}
    reh = rehearsal.prepare(cfg, tmp_path / "again")
    backbone = next(iter(study.new_model("protonet", reh.toy, reh.data, 0, backbone=reh.backbone).encoder.children()))
    assert backbone.config.model_type == "bert" and backbone.config.hidden_size == 64
    assert est["gpu_hours"] > 0 and est["gpu_memory_gb"] > 0 and est["host_memory_gb"] > 0
    assert est["assumptions"]["micro_batch"] == 150 and est["model_id"] == "bert-base-uncased"
    # the rehearsal's result goes through the notebook's cells: every contract view is complete
    metrics = res.metrics()
    assert all(_has(metrics, key) for key in res.headlines())
    assert {"per_seed", "results", "comparisons", "training", "policy_curves", "per_class_f1", "splits"} <= set(res.frames())
    assert res.card().to_dict()["figure"] == "paired_differences"
    assert res.timings()["wall_seconds"] > 0 and res.attention == []


def _has(tree, dotted):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True
