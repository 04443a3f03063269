"""Stopping a stage of study 03's SFT: the plateau rule by hand, and which samples each rule reads
(the plateau rule reads no generator field); the engine hook on hand-made evaluation records."""
import types

import pytest

from epi_utils.data.world import Sample
from epi_utils.ilp import Config, training


def test_plateau_by_hand():
    p = training.Plateau(patience=3, min_delta=0.05)
    # best 0.5 at the 2nd check; 0.52, 0.53, 0.54 never beat 0.5 + 0.05 -> stop at the 3rd of them
    assert [p.update(v) for v in (0.1, 0.5, 0.52, 0.53, 0.54)] == [False, False, False, False, True]
    q = training.Plateau(patience=2)
    assert [q.update(v) for v in (0.2, float("nan"), 0.3, 0.3, 0.3)] == [False, False, False, False, True]
    with pytest.raises(ValueError, match="patience"):
        training.Plateau(patience=0)


def _samples(causes):
    return [Sample(id=f"s{i}", task="fact_qa", split="train", prompt=f"p{i}", response="r", stage=i % 2,
                   planted_cause=c, template_id="t") for i, c in enumerate(causes)]


def test_plateau_reads_no_planted_cause_and_clean_does():
    data = _samples([None, None, "conflict", None, "inconsistency", "conflict"])
    scrambled = _samples(["conflict", None, None, "rare_complex", None, None])
    own = {s.id: s.stage for s in data}
    assert training.convergence_ids(data, stage=0, own_stage=own, rule="clean") == ["s0"]
    assert training.convergence_ids(data, stage=0, own_stage=own, rule="plateau") == ["s0", "s2", "s4"]
    assert (training.convergence_ids(scrambled, stage=0, own_stage=own, rule="plateau")
            == training.convergence_ids(data, stage=0, own_stage=own, rule="plateau"))
    assert (training.convergence_ids(scrambled, stage=0, own_stage=own, rule="clean")
            != training.convergence_ids(data, stage=0, own_stage=own, rule="clean"))
    with pytest.raises(ValueError, match="convergence rule"):
        training.convergence_ids(data, stage=0, own_stage=own, rule="truth")


def test_hook_stops_on_the_plateau_and_not_before():
    seen = []
    hook = training._convergence_hook(["a", "b"], 0.95, seen, plateau=training.Plateau(patience=2, min_delta=0.01))
    shares = [(0, 0.0), (10, 0.5), (20, 0.5), (30, 0.5)]   # step, share of a and b reproduced
    stops = []
    for step, share in shares:
        state = types.SimpleNamespace(step=step, epoch=step / 10, should_stop=False)
        hook.on_evaluate(state, [{"sample_id": "a", "exact_match": int(share >= 0.5)},
                                 {"sample_id": "b", "exact_match": 0}, {"sample_id": "c", "exact_match": 1}])
        stops.append(state.should_stop)
    assert stops == [False, False, False, True] and hook.converged
    assert [v for _, _, v in seen] == [0.0, 0.5, 0.5, 0.5]


def test_config_default_is_the_plateau_and_clean_is_an_option():
    assert Config().converge_on == "plateau"   # issue 28: no planted label decides when training stops
    assert Config(converge_on="clean").converge_on == "clean"
    with pytest.raises(ValueError, match="Config.converge_on: must be one of"):
        Config(converge_on="truth")
