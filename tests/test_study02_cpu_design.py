"""Study 02's design at toy scale: per-seed data splits, interference labels, the protection
diagnostics as controls that can fail, matched-compute replay, EWC's lambda on validation."""
import numpy as np
import pytest
import torch

from epi_utils.isolation_study import Config, inputs, study

CFG = dict(design="two_stage", world_tasks=("fact_qa", "format_conversion"), workers=1, device="cpu",
           model_size="default", pretrain=False, n_seeds=2, n_train_per_task=8, n_val_per_task=4, n_test_per_task=4,
           n_train_eval_per_task=2, steps_per_stage=6, batch_size=4, mask_update_interval=2, warmup_steps=1,
           probe_batches=1, probe_steps=2, replay_batches=1, replay_samples=2, ratios=(0.2,))


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    cfg = Config(interference_rate=0.25, **CFG)
    world = inputs.study_world(cfg)
    model, tok, _ = inputs.load_base(cfg, world)
    return cfg, world, (model, tok)


def test_seed_data_splits_labels_and_buffers(setup):
    cfg, world, (_, tok) = setup
    d0, d1 = inputs.seed_data(world, tok, cfg, 0), inputs.seed_data(world, tok, cfg, 1)
    ids = lambda xs: {s.id for s in xs}  # noqa: E731
    train0 = [s for s in d0.stages[0] + d0.stages[1] if inputs.INTERFERENCE not in s.task]
    assert len(train0) == 16 and len(d0.val) == 8 and len(d0.test) == 8
    assert not ids(train0) & ids(d0.val) and not ids(train0) & ids(d0.test) and not ids(d0.val) & ids(d0.test)
    assert ids(train0) != ids([s for s in d1.stages[0]] + [s for s in d1.stages[1]])  # seeds resample the data
    # round(0.25 * 8) = 2 conflicting copies of stage-0 prompts, in stage 1, under their own label
    copies = [s for s in d0.stages[1] if s.interferes_with]
    assert len(copies) == 2 and {s.task for s in copies} == {"fact_qa~interference"}
    orig = {s.id: s for s in d0.stages[0]}
    assert all(orig[c.interferes_with].prompt == c.prompt and orig[c.interferes_with].response != c.response
               for c in copies)
    assert d0.labels == ["fact_qa", "format_conversion", "fact_qa~interference"] and set(d0.probe) == set(d0.labels)
    assert set(d0.replay) == {"fact_qa"} and len(d0.replay_samples) == 2
    assert {s.task for s in d0.test} == {"fact_qa", "format_conversion"}
    assert d0.stage_tasks == [("fact_qa",), ("format_conversion",)]


def test_protection_holds_where_defined_and_releases_where_not(setup):
    """Controls that can fail: the moved share of stage-0-owned elements is 0 for pinned masks and
    positive for EPI's EMA refresh from one replay batch (the earlier design's release)."""
    cfg, world, base = setup
    data = inputs.seed_data(world, base[1], cfg, 0)
    moved = {m: study.run_one(m, data=data, base=base, cfg=cfg, ratio=0.2).moved_owned_stage0
             for m in ("cpi_after_stage", "epi_frozen", "epi")}
    assert moved["cpi_after_stage"] == 0.0 and moved["epi_frozen"] == 0.0
    assert moved["epi"] > 0.0


def test_bounds_matched_compute_and_scores(setup):
    cfg, world, base = setup
    data = inputs.seed_data(world, base[1], cfg, 1)
    full = study.run_one("full_sft", data=data, base=base, cfg=cfg)
    rep = study.run_one("replay", data=data, base=base, cfg=cfg)
    sep = study.run_one("separate", data=data, base=base, cfg=cfg)
    assert full.steps == rep.steps == 2 * cfg.steps_per_stage and sep.steps == cfg.steps_per_stage
    assert len(full.test) == 2 and len(sep.test) == 1 and set(full.test[1]) == {"fact_qa", "format_conversion"}
    assert all(0.0 <= v <= 1.0 for v in full.test[1].values()) and np.isnan(full.moved_owned_stage0)
    # the base model is copied, never trained in place
    again = study.run_one("full_sft", data=data, base=base, cfg=cfg)
    assert again.test == full.test and again.tokens == full.tokens


def test_ewc_lambda_is_chosen_on_validation(monkeypatch, setup):
    cfg, world, base = setup
    planted = {1.0: 0.2, 10.0: 0.6, 100.0: 0.6, 1000.0: 0.1}

    def fake(method, *, data, base, cfg, ewc_lambda=None, tuning=False, **kw):
        assert method == "ewc" and tuning
        return study.RunRecord(method=method, seed=data.seed, ratio=None, ewc_lambda=ewc_lambda, tuning=True,
                               stage_tasks=data.stage_tasks, val=[{}, {"fact_qa": planted[ewc_lambda],
                                                                      "format_conversion": planted[ewc_lambda]}])
    monkeypatch.setattr(study, "run_one", fake)
    c = Config(ewc_lambdas=tuple(planted), **CFG)
    lam, table, _ = study.choose_ewc_lambda(data=inputs.seed_data(world, base[1], c, 0), base=base, cfg=c)
    assert lam == 10.0 and [r["val_score"] for r in table] == [0.2, 0.6, 0.6, 0.1]  # tie -> the smaller lambda
