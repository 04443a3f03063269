"""The diagnosis reads only what a user has: scrambling every generator-only field of a world
(planted causes, template ids, fact ids, corpus answers, interference links, correct answers of
inconsistent pairs, sample ids) changes no signal, no stage length and no diagnosis of a real
(small) run: probe, sequential SFT with convergence on (the study's default plateau rule, issue
28), dynamics, cascade, and the study's forest diagnosis (fitted on other worlds' labels only: the
diagnosed world's own scrambled truth changes none of its diagnoses)."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from epi_utils.ilp import Config, heldout, records, study, training


@pytest.fixture(scope="module")
def worlds():
    """A small world, its base model, and the same world with every generator-only field scrambled."""
    import torch

    torch.set_num_threads(1)
    cfg = Config(n_seeds=1, n_entities=12, n_train_per_task=20, n_heldout_per_task=2, pretrain_epochs=30,
                 max_epochs=4.0, eval_every=4, plateau_patience=2, mitigate=False, device="cpu",
                 min_known_share=0.1, paraphrase_share=1.0)
    assert cfg.converge_on == "plateau"
    world = training.make_world(cfg, 0)
    model, tok, _ = training.load_base(cfg, world, 0)
    rng = np.random.default_rng(123)
    new_ids = {s.id: f"row{int(j):05d}" for s, j in zip(world.samples, rng.permutation(len(world.samples)))}
    causes = [None, "conflict", "missing_knowledge", "inconsistency", "forgetting", "rare_complex"]

    def scramble(s):
        return dataclasses.replace(
            s, id=new_ids[s.id], planted_cause=causes[int(rng.integers(len(causes)))],
            template_id=f"tmpl{int(rng.integers(1000))}", fact_id=f"f{int(rng.integers(1000))}",
            pretrain_answer=str(rng.integers(1000)), interferes_with=new_ids.get(s.interferes_with),
            true_response=str(rng.integers(1000)))

    scrambled = dataclasses.replace(world, samples=[scramble(s) for s in world.samples])
    return cfg, world, scrambled, (model, tok), new_ids


@pytest.fixture(scope="module")
def runs(worlds, tmp_path_factory):
    cfg, world, scrambled, base, new_ids = worlds
    a = study.run_seed(cfg, 0, world=world, base=base, workdir=tmp_path_factory.mktemp("a"))
    b = study.run_seed(cfg, 0, world=scrambled, base=base, workdir=tmp_path_factory.mktemp("b"))
    return a, b, new_ids


def test_scrambling_changed_the_generator_fields(runs):
    a, b, new_ids = runs
    ta = a.table.rename(index=new_ids).loc[b.table.index]
    assert (ta["planted_cause"].fillna("-") != b.table["planted_cause"].fillna("-")).any()
    assert (ta["template_id"] != b.table["template_id"]).all()


def test_diagnosis_and_signals_do_not_change(runs):
    a, b, new_ids = runs
    ta = a.table.rename(index=new_ids).loc[b.table.index]
    assert (~ta["learned"]).sum() > 0
    pd.testing.assert_series_equal(ta["learned"], b.table["learned"])
    pd.testing.assert_series_equal(ta["diagnosis"], b.table["diagnosis"])
    signal_cols = [c for c in ta.columns if c.startswith(("dyn_", "probe_", "rarity_", "conflict_"))
                   or c in ("incons_flag", "incons_group_size", "incons_n_targets", "incons_max_similarity",
                            "overwrite_later")]
    assert len(signal_cols) > 15
    pd.testing.assert_frame_equal(ta[signal_cols], b.table[signal_cols])
    # the evidence texts name partner sample ids, which were renamed; everything else is equal
    strip = lambda t: t.str.replace(r"row\d{5}|\S+/train/\d{4}", "ID", regex=True)
    pd.testing.assert_series_equal(strip(ta["evidence"].fillna("")), strip(b.table["evidence"].fillna("")))


def test_convergence_does_not_read_the_plan(runs):
    a, b, _ = runs
    assert [st.steps for st in a.stages] == [st.steps for st in b.stages]
    assert any(st.converged for st in a.stages), [dataclasses.asdict(st) for st in a.stages]  # the rule did stop


def test_forest_diagnosis_does_not_read_the_diagnosed_worlds_planted_labels(runs):
    """The same two runs diagnosed by the study's forest, fitted on two other worlds (copies of the unscrambled
    run under other names: training data of the classifier): the world whose generator fields (and so its
    truth) were scrambled gets exactly the diagnoses of the original."""
    a, b, new_ids = runs

    def lowo(rec, rename=None):
        own = records.SeedRecord(seed=0, table=rec.table.copy(), stages=[], heldout_accuracy=0.0, base_recall={})
        others = [records.SeedRecord(seed=k, table=a.table.rename(index=lambda i, k=k: f"w{k}/{i}"), stages=[],
                                     heldout_accuracy=0.0, base_recall={}) for k in (1, 2)]
        heldout.apply_diagnosis([own, *others], [], seed=0, trees=20)
        return own.table.rename(index=rename) if rename else own.table

    ta, tb = lowo(a, new_ids), lowo(b)
    ta = ta.loc[tb.index]
    assert (ta["truth"] != tb["truth"]).any()            # the scrambled world's own labels differ...
    assert (tb.loc[~tb["learned"], "diagnosed_by"] == "forest").all()
    pd.testing.assert_series_equal(ta["diagnosis"], tb["diagnosis"])   # ...and its diagnosis does not


def test_mitigation_parts_give_the_records_of_one_pass(worlds, runs):
    """The study runs each world's mitigations as independent parts (the uniform control, each
    diagnosed cause's arms) in any process and order: merged, they are the records of one pass."""
    from epi_utils.ilp import mitigation

    cfg, world, _, (model, tok), _ = worlds
    table = runs[0].table
    cfg = cfg.replace(mit_steps=2, mit_batch_size=4)
    kw = dict(seed=0, model=model, tokenizer=tok, train=world.split("train"), heldout=world.split("heldout"),
              table=table)
    parts = mitigation.world_parts(table)
    assert parts[0] == "control" and len(parts) >= 2, parts
    whole = mitigation.world_arms(cfg, **kw)
    split = sorted((r for p in reversed(parts) for r in mitigation.world_arms(cfg, part=p, **kw)),
                   key=mitigation.arm_order)
    first = [r.arm for r in whole if r.cause == parts[1]]   # per cause: fix, focused (not rare_complex), control
    assert whole[0].cause == parts[1] and first[0] == "fix" and first[-1] == "control", whole
    assert split == whole
    with pytest.raises(ValueError, match="part must be"):
        mitigation.world_arms(cfg, part="bogus", **kw)
