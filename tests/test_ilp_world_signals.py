"""Planted truth of the synthetic world: each data-level signal flags the samples it was built for."""
import numpy as np
import pandas as pd
import pytest

from epi_utils.data.world import WorldConfig, build_world
from epi_utils.ilp import mitigation, signals
from epi_utils.ilp.diagnosis import CascadeThresholds, diagnose


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(seed=3, n_entities=30, n_train_per_task=40, n_heldout_per_task=4,
                                   inconsistency_rate=0.2, forgetting_rate=0.2, rare_complex_rate=0.1))


@pytest.fixture(scope="module")
def table(world):
    train = [s for st in world.stages() for s in st]
    return signals.signal_table(train, inconsistency_kwargs={"similarity_threshold": 1.0})


def test_inconsistency_flags_exactly_the_planted_pairs(world, table):
    planted = table["planted_cause"] == "inconsistency"
    assert planted.sum() > 0
    assert (table["incons_flag"] == planted).all()


def test_later_stage_overwrite_flags_exactly_the_planted_forgetting_samples(world, table):
    planted = table["planted_cause"] == "forgetting"
    assert planted.sum() > 0
    assert (table["overwrite_later"] == planted).all()
    # the interfering copy is in the last stage and points back
    by = table.loc[planted, "overwrite_by"]
    assert all(table.loc[b, "stage"] == world.config.n_stages - 1 for b in by)


def test_rarity_from_text_flags_exactly_the_rare_prompt_forms(table):
    planted = table["planted_cause"] == "rare_complex"
    rare = table["rarity_ratio"] <= 0.25
    assert planted.sum() > 0 and (rare == planted).all()


def test_cascade_on_data_signals_alone_recovers_data_level_causes(table):
    t = table.assign(learned=False)
    out = diagnose(t, thresholds=CascadeThresholds())
    for cause in ("inconsistency", "forgetting", "rare_complex"):
        sel = t["planted_cause"] == cause
        assert (out.loc[sel, "diagnosis"] == cause).all(), cause


def test_fix_plans(world, table):
    train = [s for st in world.stages() for s in st]
    diag = pd.DataFrame({"diagnosis": table["planted_cause"].fillna("unexplained")}, index=table.index)
    cfg = mitigation.InterventionConfig(replay_buffer=5)
    rng = np.random.default_rng(0)
    inc = mitigation.plan_fix("inconsistency", train_samples=train, table=table, diagnosis=diag,
                              config=cfg, rng=rng)
    # every duplicated pair is relabelled to one target, in the training rows and in the judged targets
    relabelled = {(p, r) for _, p, r in inc.train}
    prompts = [p for p, _ in relabelled]
    assert len(prompts) == len(set(prompts)) + sum(1 for s in train if s.interferes_with)  # only overwrites stay
    pair_targets = {}
    for sid, tgt in inc.targets.items():
        pair_targets.setdefault(table.loc[sid, "incons_group_key"], set()).add(tgt)
    assert all(len(v) == 1 for v in pair_targets.values())
    fo = mitigation.plan_fix("forgetting", train_samples=train, table=table, diagnosis=diag,
                             config=cfg, rng=rng)
    n_forgot = int((table["planted_cause"] == "forgetting").sum())
    assert len(fo.focus) == n_forgot + 5 and set(fo.targets) == set(table.index[table["planted_cause"] == "forgetting"])
    mk = mitigation.plan_fix("missing_knowledge", train_samples=train, table=table, diagnosis=diag,
                             config=cfg, rng=rng)
    assert mk.focus and all(kind == "lm" for kind, _, _ in mk.focus)
    sid = next(iter(mk.targets))
    assert any(table.loc[sid, "response"] in text.split() for _, text, _ in mk.focus)
    with pytest.raises(ValueError, match="cause must be one of"):
        mitigation.plan_fix("typo", train_samples=train, table=table, diagnosis=diag, config=cfg, rng=rng)


def test_intervention_config_validation():
    with pytest.raises(ValueError, match="fix_share"):
        mitigation.InterventionConfig(fix_share=0.0)


def test_replay_schedule_keeps_overwritten_prompts_out(world):
    from epi_utils.ilp.training import schedule

    base = world.stages()
    full = schedule(world, replay=1.0, rng=np.random.default_rng(0))
    overwritten = {s.interferes_with for s in world.split("train") if s.interferes_with}
    replayed = {s.id for s in full[1]} - {s.id for s in base[1]}
    assert replayed == {s.id for s in base[0]} - overwritten
    assert [len(st) for st in schedule(world, replay=0.0, rng=np.random.default_rng(0))] == [len(st) for st in base]
    half = schedule(world, replay=0.5, rng=np.random.default_rng(0))
    assert len(half[1]) - len(base[1]) == round(0.5 * len(replayed))
    with pytest.raises(ValueError, match="replay must be in"):
        schedule(world, replay=1.5, rng=np.random.default_rng(0))
