"""End-to-end study on a tiny synthetic FewAsp root: the full protocol runs when a dataset has
its own train.json, the transfer protocol otherwise; summaries have the metrics.json shape."""
import json

import numpy as np
import pytest

from epi_utils.acd import summary
from epi_utils.acd.training import ACDConfig, load_data, run_study

WORDS = ["good", "bad", "nice", "cheap", "slow", "fast", "warm", "cold", "big", "small", "loud", "quiet"]


def toy_dataset(rng, classes, per_class=8, multi=False):
    obj = {c: [] for c in classes}
    for i, c in enumerate(classes):
        for j in range(per_class):
            toks = [c.split("_")[0]] + list(rng.choice(WORDS, 4))
            asp = [c]
            if multi and j < 2:
                other = classes[(i + 1) % len(classes)]
                toks, asp = toks + [other.split("_")[0]], [c, other]
                obj[other].append([toks, asp])
            obj[c].append([toks, asp])
    return obj


@pytest.fixture()
def toy_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EPI_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    names = ["food", "service", "price", "staff", "room", "drink", "music", "parking", "view", "bed", "pool", "coffee"]
    split = {"train": [f"{n}_a" for n in names[:6]], "val": [f"{n}_b" for n in names[6:9]],
             "test": [f"{n}_c" for n in names[9:]]}
    (tmp_path / "separate.json").write_text(json.dumps({"train": split["train"], "validation": split["val"],
                                                         "test": split["test"]}))
    for ds, splits, multi in (("FewAsp(single)", ("train", "val", "test"), False),
                              ("FewAsp(multi)", ("train", "val", "test"), True), ("FewAsp", ("val", "test"), True)):
        (tmp_path / ds).mkdir()
        for s in splits:
            (tmp_path / ds / f"{s}.json").write_text(json.dumps(toy_dataset(rng, split[s], multi=multi)))
    return tmp_path


def test_study_protocols_and_summaries(toy_root):
    data = load_data(root=toy_root)
    assert any("FewAsp/train.json is missing" in m for m in data.missing)
    cfg = ACDConfig(settings=["2way2shot", "3way1shot"], seeds=[0, 1], n_query=1, train_episodes=4, val_episodes=3,
                    test_episodes=4, transfer_test_episodes=2, hidden=8, attn_dim=4, policy_epochs=1, num_threads=1)
    res = run_study(cfg, data, progress=False)
    eps = res["episodes"]
    src = eps.groupby("dataset").train_dataset.first().to_dict()
    assert src == {"FewAsp(single)": "FewAsp(single)", "FewAsp(multi)": "FewAsp(multi)", "FewAsp": "FewAsp(single)"}
    assert eps.groupby("dataset").episode.nunique().to_dict() == {"FewAsp(single)": 4, "FewAsp(multi)": 4, "FewAsp": 2}
    assert set(eps.method) == {"protonet", "proto_awatt_static", "proto_awatt_policy"}
    assert eps[["auc", "macro_f1"]].stack().between(0, 1).all()
    results = summary.over_seeds(summary.per_seed(eps))
    head = summary.headline_metrics(results)
    assert set(head) == {"protonet", "proto_awatt_static", "proto_awatt_policy"}
    cell = head["proto_awatt_policy"]["2way2shot"]
    assert cell["n_seeds"] == 2 and len(cell["auc_ci95"]) == 2 and cell["auc_ci95"][0] <= cell["auc"] <= cell["auc_ci95"][1]
    assert summary.transfer_metrics(results)["FewAsp"]["transfer"] is True
    assert summary.transfer_metrics(results)["FewAsp(multi)"]["transfer"] is False
    assert len(res["attention"]) > 0 and abs(sum(res["attention"][0]["weights"]) - 1) < 1e-5
    assert "The policy threshold" in summary.policy_verdict(summary.policy_vs_static(summary.per_seed(eps)))
