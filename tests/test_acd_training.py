"""Episodic training of Study 05: early stopping restores the best epoch (planted validation
curve), the jointly trained policy learns (on training episodes, or on episodes of a validation
split with its held-out reward kept), and the study runs end to end on a tiny FewAsp root (every
method scored on the same test episodes; comparisons over seeds with the oracle's headroom; the
result card)."""
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
                holdout=0.5, val_episodes=3, select_episodes=2, test_episodes=4, hidden=8, attn_dim=4,
                policy_max_epochs=2, policy_patience=1, shared_training=False)
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


def test_joint_policy_on_episodes_of_another_split_records_its_held_out_reward(toy_root):
    """Issue 30: the joint policy steps on multi-label episodes of validation classes (scored by the
    current encoder), and its deterministic reward on the held-out episodes is kept per epoch."""
    data = training.load_data(root=toy_root, datasets=("FewAsp(single)", "FewAsp(multi)"))
    model = study.new_model("proto_awatt", small_cfg(), data, 0)
    pol = {2: ThresholdPolicy(2, init_threshold=0.5)}
    tune, enc = data.splits[("FewAsp(multi)", "val")], data.encoded[("FewAsp(multi)", "val")]
    held = sample_episodes(tune, 2, n_way=2, k_shot=1, n_query=1, rng=np.random.default_rng(0))
    before = [p.clone() for p in pol[2].parameters()]
    fit = training.fit_model(model, data.splits[("FewAsp(single)", "train")], data.encoded[("FewAsp(single)", "train")],
                             shapes=[(2, 1)], n_query=1, episodes_per_epoch=3, max_epochs=2, patience=3, lr=0.01,
                             rng=np.random.default_rng(1), val_episodes=held, val_enc=enc, policies=pol,
                             policy_split=tune, policy_enc=enc, policy_reward="macro_f1")
    assert len(fit.policy_val_reward) == 2 and all(0 <= r <= 1 for r in fit.policy_val_reward)
    assert any(not torch.equal(a, b) for a, b in zip(before, pol[2].parameters()))
    with pytest.raises(ValueError, match="policy_enc"):
        training.fit_model(model, data.splits[("FewAsp(single)", "train")], data.encoded[("FewAsp(single)", "train")],
                           shapes=[(2, 1)], n_query=1, episodes_per_epoch=1, max_epochs=1, patience=1, lr=0.01,
                           rng=np.random.default_rng(1), policies=pol, policy_split=tune)


def test_study_design_pairing_and_summaries(toy_root):
    data = training.load_data(root=toy_root)
    cfg = small_cfg()
    res = study.run_study(cfg, data=data, progress=lambda it, **kw: it)
    eps = res.episode_frame()
    assert set(eps.dataset) == {"FewAsp(multi)", "FewAsp"}
    assert eps.groupby(["dataset", "method", "setting", "seed"]).size().eq(4).all()
    assert set(eps.method) == set(study.METHODS)
    assert eps[["auc", "macro_f1"]].stack().between(0, 1).all()
    # one model per setting, seed and architecture (five), all trained on FewAsp(single)
    assert len(res.training) == 2 * 2 * 5 and {r.settings for r in res.training} == {("2way2shot",), ("3way1shot",)}
    assert all(len(r.policy_val_reward) == len(r.val_auc) for r in res.training if r.arch == "proto_awatt")
    # every method sees the same test episodes: the Proto-AWATT rows share one encoder (identical AUC)
    piv = eps.pivot_table(index=["dataset", "setting", "seed", "episode"], columns="method", values="auc")
    for m in ("proto_awatt_policy_joint", "proto_awatt_policy_posthoc", "proto_awatt_oracle_count"):
        assert np.allclose(piv["proto_awatt_static"], piv[m])
    # the post-hoc policy: one curve per (setting, seed), restored epoch within it
    pol = res.policy_frame()
    assert pol.groupby(["setting", "seed"]).ngroups == 4 and (pol.best_epoch <= pol.groupby(
        ["setting", "seed"]).epoch.transform("max")).all()
    comps = res.comparisons
    assert {c["claim"] for c in comps} == set(summary.CLAIMS) and {c["diff"]["unit"] for c in comps} == {"seeds"}
    assert {c["setting"] for c in comps} == {"2way2shot", "3way1shot", "all"}
    # the oracle's headroom sits beside every threshold difference, equal to the oracle's own comparison
    for c in comps:
        if c["claim"] in summary.THRESHOLD_CLAIMS:
            oracle = res.comparison("count_oracle", dataset=c["dataset"], setting=c["setting"])
            assert c["headroom"]["mean"] == oracle["diff"]["mean"]
        else:
            assert "headroom" not in c
    metrics = res.metrics()
    assert all(_has(metrics, k) for k in res.headlines()) and len(res.headlines()) == 5
    card = res.card()
    assert card.figure == "paired_differences" and 3 <= len(card.headlines) <= 5
    main = res.comparison("learned_threshold_joint")
    assert f"{main['diff']['n']} seeds" in card.answer and card.answer[0].isupper()
    assert {"per_seed", "results", "comparisons", "policy_curves", "training", "splits"} <= set(res.frames())
    assert len(res.attention) > 0 and abs(sum(res.attention[0]["weights"]) - 1) < 1e-5


def test_study_without_ablations_and_with_single_label_tuning(toy_root):
    """The ablation claims are left out when their models are not trained; tune_on may be another split."""
    data = training.load_data(root=toy_root)
    res = study.run_study(small_cfg(archs=["proto_awatt"], tune_on="FewAsp(single)", eval_datasets=["FewAsp"],
                                    n_seeds=1, settings=["2way2shot"]), data=data)
    assert set(res.episode_frame().method) == {"proto_awatt_static", *study.POLICY_METHODS, "proto_awatt_oracle_count"}
    assert {c["claim"] for c in res.comparisons} == set(summary.THRESHOLD_CLAIMS)
    assert len(res.card().headlines) == 3


def _has(tree, dotted):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


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
    with pytest.raises(ConfigError, match=r"^Config.archs: must include proto_awatt"):
        Config(archs=["protonet"])
    with pytest.raises(ConfigError, match=r"^Config.holdout: "):
        Config(holdout=1.0)
    assert Config(settings=["5way5shot"], seed=3, n_seeds=2).seeds == [3, 4]
    assert Config(settings=["5way10shot"]).shapes == [(5, 10)]


def test_oracle_count_ceiling_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    labels = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]])
    pred = study.oracle_count_predict(probs, labels)
    assert pred.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
