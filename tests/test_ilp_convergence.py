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


def test_evaluating_only_the_sft_samples_writes_the_engines_records_of_them(tmp_path):
    """The SFT's evaluation points are taken on the SFT samples only (``train_sft(dynamics_samples=...)``,
    not the knowledge-mix rows): the same lines, bit for bit, as the engine's evaluation of every row
    filtered to those samples, the same convergence checks and the same trained weights; without the
    start point (``eval_at_start=False``, a later stage) the same lines but step 0's."""
    import copy
    import json

    import numpy as np
    import torch

    from epi_utils.lm.models import load_model
    from epi_utils.lm.train import TrainConfig, train_sft

    cfg = Config(n_entities=12, n_train_per_task=20, n_heldout_per_task=2)
    world = training.make_world(cfg, 0)
    model, tok = load_model("tiny", world=world, device="cpu", pretrain=False)
    data = training.schedule(world, replay=0.25, rng=np.random.default_rng([0, 7]))[1]
    data = data + training.knowledge_mix(world, share=1.0, rng=np.random.default_rng([0, 8]))
    sft = [s for s in data if not s.id.startswith(training.CORPUS_PREFIX)]
    assert 0 < len(sft) < len(data)
    own = {s.id: 1 for s in sft}
    tc = dict(lr=3e-3, batch_size=8, max_steps=5, eval_every=2, schedule="constant", warmup_ratio=0.0, seed=3)
    runs = {}
    for how, subset, at_start in (("all", None, True), ("sft", sft, True), ("later", sft, False)):
        m, seen = copy.deepcopy(model), []
        stop = training._convergence_hook(training.convergence_ids(data, stage=1, own_stage=own, rule="plateau"),
                                          0.95, seen, plateau=training.Plateau(patience=5))
        path = tmp_path / f"{how}.jsonl"
        train_sft(m, tok, [data], config=TrainConfig(**tc, eval_at_start=at_start), hooks=[stop], dynamics_path=path,
                  dynamics_samples=subset, progress=False)
        lines = [ln for ln in path.read_text().splitlines() if not json.loads(ln)["sample_id"].startswith("corpus/")]
        runs[how] = lines, seen, [p.detach().clone() for p in m.parameters()]
    (e_lines, e_seen, e_par), (h_lines, h_seen, h_par) = runs["all"], runs["sft"]
    assert len(e_lines) == 4 * len(sft)   # steps 0, 2, 4 and the stage end (5)
    assert len(path.read_text().splitlines()) == 3 * len(sft)   # "later": no corpus rows, no step 0
    assert h_lines == e_lines and h_seen == e_seen
    assert all(torch.equal(a, b) for a, b in zip(e_par, h_par))
    later_lines, later_seen, later_par = runs["later"]
    assert later_lines == [ln for ln in e_lines if json.loads(ln)["step"] > 0] and later_seen == e_seen[1:]
    assert all(torch.equal(a, b) for a, b in zip(e_par, later_par))
    with pytest.raises(ValueError, match="dynamics_samples holds 1 sample"):
        train_sft(copy.deepcopy(model), tok, [sft], config=TrainConfig(**tc), dynamics_samples=data[-1:],
                  progress=False)
