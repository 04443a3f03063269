"""Episodic training of Study 05: early stopping restores the best epoch (planted validation
curve), the jointly trained policy learns, and the study runs end to end on a tiny FewAsp root
(full protocol where a train.json exists, labelled transfer otherwise; every method scored on the
same test episodes; a run on FewAsp(single) alone has no transfer tables -- issue 12)."""
import json

import numpy as np
import pytest
import torch

from epi_utils.acd import Config, study, summary, training
from epi_utils.acd.episodes import sample_episodes
from epi_utils.acd.threshold import ThresholdPolicy
from epi_utils.workbench.contract import ConfigError

WORDS = ["good", "bad", "nice", "cheap", "slow", "fast", "warm", "cold", "big", "small", "loud", "quiet"]
NAMES = ["food", "service", "price", "staff", "room", "drink", "music", "parking", "view", "bed", "pool", "coffee"]


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


def write_toy_root(root, *, per_class=8):
    rng = np.random.default_rng(0)
    split = {"train": [f"{n}_a" for n in NAMES[:6]], "val": [f"{n}_b" for n in NAMES[6:9]],
             "test": [f"{n}_c" for n in NAMES[9:]]}
    (root / "separate.json").write_text(json.dumps({"train": split["train"], "validation": split["val"],
                                                     "test": split["test"]}))
    for ds, splits, multi in (("FewAsp(single)", ("train", "val", "test"), False),
                              ("FewAsp(multi)", ("train", "val", "test"), True), ("FewAsp", ("val", "test"), True)):
        (root / ds).mkdir()
        for s in splits:
            (root / ds / f"{s}.json").write_text(json.dumps(toy_dataset(rng, split[s], per_class, multi=multi)))
    return root


@pytest.fixture()
def toy_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EPI_CACHE_DIR", str(tmp_path / "cache"))
    return write_toy_root(tmp_path)


def small_cfg(**kw):
    base = dict(settings=["2way2shot", "3way1shot"], n_seeds=2, n_query=1, train_episodes=4, max_epochs=2, patience=1,
                val_episodes=3, test_episodes=4, transfer_test_episodes=2, hidden=8, attn_dim=4, policy_epochs=1,
                shared_training=False)
    return Config(**{**base, **kw})


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(toy_root, monkeypatch):
    data = training.load_data(root=toy_root, datasets=("FewAsp(single)",))
    cfg = small_cfg()
    model = study.new_model("protonet", cfg, data, 0)
    planted = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])   # best at epoch 2; epochs 3-5 do not beat it
    monkeypatch.setattr(training, "validation_auc", lambda *a, **k: next(planted))
    states = {}
    val = sample_episodes(data.splits[("FewAsp(single)", "val")], 2, n_way=2, k_shot=1, n_query=1,
                          rng=np.random.default_rng(0))
    fit = training.fit_model(model, data.splits[("FewAsp(single)", "train")], data.encoded[("FewAsp(single)", "train")],
                             shapes=[(2, 2)], n_query=1, episodes_per_epoch=3, max_epochs=10, patience=3, lr=0.05,
                             rng=np.random.default_rng(0), val_episodes=val,
                             val_enc=data.encoded[("FewAsp(single)", "val")],
                             on_epoch=lambda e, auc: states.__setitem__(e, {k: v.clone() for k, v in model.state_dict().items()}))
    assert fit.val_auc == [0.5, 0.7, 0.6, 0.65, 0.69]
    assert fit.best_epoch == 2 and fit.epochs_run == 5 and fit.stopped_early
    assert len(fit.losses) == 15
    final = model.state_dict()
    assert all(torch.equal(final[k], states[2][k]) for k in final)
    assert not all(torch.equal(final[k], states[5][k]) for k in final)


def test_joint_policy_trains_on_training_episodes(toy_root):
    data = training.load_data(root=toy_root, datasets=("FewAsp(single)",))
    model = study.new_model("proto_awatt", small_cfg(), data, 0)
    pols = {2: ThresholdPolicy(2, init_threshold=0.5), 3: ThresholdPolicy(3, init_threshold=1 / 3)}
    before = {n: [p.clone() for p in pol.parameters()] for n, pol in pols.items()}
    fit = training.fit_model(model, data.splits[("FewAsp(single)", "train")], data.encoded[("FewAsp(single)", "train")],
                             shapes=[(2, 2), (3, 1)], n_query=2, episodes_per_epoch=6, max_epochs=2, patience=3,
                             lr=0.01, rng=np.random.default_rng(1), policies=pols)
    assert len(fit.policy_reward) == 2 and all(0 <= r <= 1 for r in fit.policy_reward)
    for n, pol in pols.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[n], pol.parameters())), f"policy {n} did not move"
    with pytest.raises(ValueError, match="policies lack n_way"):
        training.fit_model(model, data.splits[("FewAsp(single)", "train")], data.encoded[("FewAsp(single)", "train")],
                           shapes=[(4, 1)], n_query=1, episodes_per_epoch=1, max_epochs=1, patience=1, lr=0.01,
                           rng=np.random.default_rng(1), policies=pols)


def test_study_protocols_pairing_and_summaries(toy_root):
    data = training.load_data(root=toy_root)
    assert data.missing == ["FewAsp/train.json"]
    res = study.run_study(small_cfg(), data=data, progress=lambda it, **kw: it)
    eps = res.episode_frame()
    src = eps.groupby("dataset").train_dataset.first().to_dict()
    assert src == {"FewAsp(single)": "FewAsp(single)", "FewAsp(multi)": "FewAsp(multi)", "FewAsp": "FewAsp(single)"}
    assert eps.groupby("dataset").episode.nunique().to_dict() == {"FewAsp(single)": 4, "FewAsp(multi)": 4, "FewAsp": 2}
    assert set(eps.method) == set(study.METHODS)
    assert eps[["auc", "macro_f1"]].stack().between(0, 1).all()
    # one model per setting and seed, two architectures, two training sources
    assert len(res.training) == 2 * 2 * 2 * 2 and {r.settings for r in res.training} == {("2way2shot",), ("3way1shot",)}
    # the three Proto-AWATT rows share one encoder and the same test episodes: identical AUC
    piv = eps.pivot_table(index=["dataset", "setting", "seed", "episode"], columns="method", values="auc")
    assert np.allclose(piv["proto_awatt_static"], piv["proto_awatt_policy_joint"])
    assert np.allclose(piv["proto_awatt_static"], piv["proto_awatt_policy_posthoc"])
    results = res.results
    head = summary.headline_metrics(results)
    cell = head["proto_awatt_policy_joint"]["2way2shot"]
    assert cell["n_seeds"] == 2 and cell["auc_ci95"][0] <= cell["auc"] <= cell["auc_ci95"][1]
    assert res.metrics()["proto_awatt_policy_joint"]["2way2shot"] == cell
    assert list(res.results.columns[:8]) == ["method", "setting", "dataset", "train_dataset", "auc", "auc_low",
                                             "auc_high", "macro_f1"]
    tm = summary.transfer_metrics(results)
    assert tm["FewAsp"]["transfer"] is True and tm["FewAsp(multi)"]["transfer"] is False
    assert len(res.attention) > 0 and abs(sum(res.attention[0]["weights"]) - 1) < 1e-5
    comps = summary.paired_comparisons(eps)
    assert {c["claim"] for c in comps} == set(summary.CLAIMS) and {c["diff"]["unit"] for c in comps} == {"seeds", "episodes"}
    assert {(m, p) for m, p in zip(res.threshold_frame().method, res.threshold_frame().dataset)} >= {
        ("proto_awatt_policy_joint", "FewAsp"), ("proto_awatt_policy_posthoc", "FewAsp(single)")}


def test_single_dataset_run_has_no_transfer_tables(toy_root):
    """Issue 12: eval_datasets=["FewAsp(single)"] (a declared value) crashed the transfer cell with KeyError."""
    data = training.load_data(root=toy_root)
    res = study.run_study(small_cfg(eval_datasets=["FewAsp(single)"], n_seeds=1, settings=["2way2shot"]), data=data)
    results = res.results
    assert set(results.dataset) == {"FewAsp(single)"}
    assert summary.transfer_table(results).empty and summary.transfer_metrics(results) == {}
    assert res.metrics()["transfer"] == {} and set(summary.per_class_tables(
        res.class_frame(), method="proto_awatt_policy_joint", datasets=summary.PER_CLASS_DATASETS).dataset) == {"FewAsp(single)"}
    empty = summary.results_table(results, dataset="FewAsp(multi)")
    assert empty.empty and "macro-F1" in empty.columns


def test_missing_folder_names_every_file_and_gives_the_hint_once(tmp_path):
    """Issue 12: a missing FewAsp folder repeated the fetch hint 9 times (2.4 KB). Issue 31: the message
    names the folder searched (no literal $EPI_DATA_DIR) and both remedies, with no hard-coded claim
    about which files a shared copy lacks."""
    with pytest.raises(training.D.FewAspMissingError) as err:
        training.load_data(root=tmp_path / "nothing")
    msg = str(err.value)
    assert msg.count("epi data fetch fewasp") == 1 and msg.count("FewAsp(multi)/train.json") <= 2
    assert "FewAsp(single)/val.json" in msg and len(msg) < 900
    assert f"searched: {tmp_path / 'nothing'}" in msg and "set EPI_DATA_DIR to a folder" in msg
    assert "$EPI_DATA_DIR" not in msg and "shared copy" not in msg


def test_config_validation_names_the_parameter():
    with pytest.raises(ConfigError, match=r"^Config.settings: setting must look like '5way5shot'.*\(got \('5way',\)\)"):
        Config(settings=["5way"])
    with pytest.raises(ConfigError, match=r"^Config.patience: must be >= 1 \(got 0\)"):
        Config(patience=0)
    with pytest.raises(ConfigError, match=r"^Config.eval_datasets: must be one of"):
        Config(eval_datasets=["Yelp"])
    with pytest.raises(ConfigError, match=r"^Config.settings: must not repeat a value"):
        Config(settings=["5way5shot", "5way5shot"])
    assert Config(settings=["5way5shot"], seed=3, n_seeds=2).seeds == [3, 4]
    assert Config(settings=["5way10shot"]).shapes == [(5, 10)]


def test_oracle_count_ceiling_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    labels = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]])
    pred = study.oracle_count_predict(probs, labels)
    assert pred.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
