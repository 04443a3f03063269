"""The synthetic world: determinism, planted ground truth, validation."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from epi_utils.data.world import PLANTED_CAUSES, TASKS, WorldConfig, build_world

CFG = WorldConfig(seed=3, n_entities=40, n_train_per_task=40, n_heldout_per_task=12,
                  missing_knowledge_rate=0.1, conflict_rate=0.1, inconsistency_rate=0.1,
                  forgetting_rate=0.1, rare_complex_rate=0.1, n_stages=2)


@pytest.fixture(scope="module")
def world():
    return build_world(CFG)


def _dump(w):
    return ([s.to_dict() for s in w.samples], w.pretrain_corpus, [f.to_dict() for f in w.facts])


def test_same_seed_identical_other_seed_different(world):
    assert _dump(build_world(CFG)) == _dump(world)
    other = build_world(WorldConfig(**{**CFG.to_dict(), "seed": 4, "tasks": CFG.tasks}))
    assert _dump(other) != _dump(world)
    assert [s.prompt for s in other.samples] != [s.prompt for s in world.samples]


def test_tasks_splits_and_ids(world):
    ids = [s.id for s in world.samples]
    assert len(ids) == len(set(ids))
    assert len(TASKS) >= 5
    for t in TASKS:
        assert len([s for s in world.split("train", task=t) if s.interferes_with is None]) == CFG.n_train_per_task
        assert len(world.split("heldout", task=t)) == CFG.n_heldout_per_task
        train_prompts = {s.prompt for s in world.split("train", task=t)}
        assert not train_prompts & {s.prompt for s in world.split("heldout", task=t)}
    assert all(s.planted_cause is None for s in world.split("heldout"))
    assert world.stage_tasks() == [TASKS[:3], TASKS[3:]]
    stages = world.stages()
    assert len(stages) == 2 and all(s.stage == k for k, st in enumerate(stages) for s in st)
    assert sum(map(len, world.mixed())) == len(TASKS) * CFG.n_train_per_task
    vocab = set(world.vocabulary())
    for s in world.samples:
        assert set(s.prompt.split()) <= vocab and set(s.response.split()) <= vocab


def test_planted_counts_match_rates(world):
    c = Counter((s.task, s.planted_cause) for s in world.split("train") if s.interferes_with is None)
    n = CFG.n_train_per_task
    assert c[("fact_qa", "missing_knowledge")] == round(0.1 * n) == 4
    assert c[("fact_qa", "conflict")] == 4
    for t in TASKS:
        assert c[(t, "inconsistency")] == 4          # two pairs
        assert c[(t, "rare_complex")] == 4
        assert c[(t, "forgetting")] == (4 if t in TASKS[:3] else 0)
        if t != "fact_qa":
            assert c[(t, "missing_knowledge")] == c[(t, "conflict")] == 0
    # rates of 0 plant nothing
    w0 = build_world(WorldConfig(seed=1, n_entities=20, n_train_per_task=10, n_heldout_per_task=2,
                                 missing_knowledge_rate=0, conflict_rate=0, inconsistency_rate=0,
                                 forgetting_rate=0, rare_complex_rate=0))
    assert all(s.planted_cause is None for s in w0.samples)


def test_every_planted_sample_carries_its_ground_truth(world):
    facts = {f.fact_id: f for f in world.facts}
    corpus = set(world.pretrain_corpus)
    by_prompt = defaultdict(list)
    for s in world.split("train"):
        by_prompt[(s.task, s.prompt)].append(s)
    template_size = Counter(s.template_id for s in world.split("train"))
    for s in world.split("train"):
        cause = s.planted_cause
        assert cause in PLANTED_CAUSES or cause is None
        if cause == "missing_knowledge":
            f = facts[s.fact_id]
            assert not f.in_pretrain and s.pretrain_answer is None and s.response == f.value
            assert f"the {f.attribute} of {f.entity} is {f.value} ." not in corpus
        elif cause == "conflict":
            f = facts[s.fact_id]
            assert f.in_pretrain and s.pretrain_answer == f.value != s.response
            assert f"the {f.attribute} of {f.entity} is {f.value} ." in corpus
        elif cause == "inconsistency":
            group = [o for o in by_prompt[(s.task, s.prompt)] if o.interferes_with is None]
            assert len(group) == 2 and len({o.response for o in group}) == 2
            assert all(o.planted_cause == "inconsistency" for o in group)
        elif cause == "forgetting":
            assert s.stage == 0
            later = [o for o in world.split("train") if o.interferes_with == s.id]
            assert len(later) == 1 and later[0].stage == CFG.n_stages - 1
            assert later[0].prompt == s.prompt and later[0].response != s.response
        elif cause == "rare_complex":
            assert "rare" in s.template_id and template_size[s.template_id] <= 2
            main = [len(o.response.split()) for o in world.split("train", task=s.task) if o.planted_cause is None]
            assert len(s.response.split()) > np.median(main)
        else:  # unplanted: unique prompt, answer agrees with the corpus for fact QA
            if s.interferes_with is None:
                assert len([o for o in by_prompt[(s.task, s.prompt)] if o.interferes_with is None]) == 1
            if s.task == "fact_qa" and s.interferes_with is None:
                assert facts[s.fact_id].in_pretrain and s.response == s.pretrain_answer


def test_task_answers_are_correct(world):
    for s in world.split("heldout"):
        words = s.prompt.split()
        if s.task == "reversal":
            assert s.response.split() == words[1:][::-1]
        elif s.task == "sorting":
            assert s.response.split() == [str(x) for x in sorted(map(int, words[1:]))]
        elif s.task == "arithmetic":
            a, op, b = int(words[1]), words[2], int(words[3])
            assert int(s.response) == (a + b if op == "plus" else a - b)
        elif s.task == "key_lookup":
            kv = dict(zip(words[3::2], words[4::2]))
            assert s.response == kv[words[1]]


@pytest.mark.parametrize("field,value,match", [
    ("missing_knowledge_rate", 1.5, r"missing_knowledge_rate must be a fraction in \[0, 1\]"),
    ("conflict_rate", -0.1, r"conflict_rate must be a fraction in \[0, 1\]"),
    ("tasks", ("fact_qa", "poetry"), r"unknown task 'poetry'; allowed values: \('fact_qa'"),
    ("n_stages", 0, r"n_stages must be an integer in \[1, 6\]"),
    ("n_entities", 1, r"n_entities must be an integer"),
])
def test_invalid_settings_name_field_and_allowed_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**{field: value})


def test_rates_that_exceed_the_samples_and_bad_split():
    with pytest.raises(ValueError, match="add up to more than"):
        WorldConfig(missing_knowledge_rate=0.5, conflict_rate=0.5, inconsistency_rate=0.3)
    with pytest.raises(ValueError, match="forgetting_rate > 0 needs n_stages >= 2"):
        WorldConfig(n_stages=1, forgetting_rate=0.1)
    w = build_world(WorldConfig(seed=0, n_entities=12, n_train_per_task=8, n_heldout_per_task=2))
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'heldout'\)"):
        w.split("test")
    with pytest.raises(ValueError, match="facts must be one of"):
        build_world(WorldConfig(), facts="imaginary")


def test_real_facts_world():
    w = build_world(WorldConfig(seed=0), facts="real")
    assert w.kind == "real"
    paris = [f for f in w.facts if f.entity == "france" and f.attribute == "capital"]
    assert paris and paris[0].value == "paris" and paris[0].in_pretrain
    mk = [s for s in w.split("train") if s.planted_cause == "missing_knowledge"]
    assert mk and all(not w.fact(s.fact_id).in_pretrain for s in mk)


def test_cloze_fact_prompts_are_additive(world):
    # the default keeps the question form (studies 01 and 02 build this world)
    assert "fact_prompt" in CFG.to_dict() and CFG.fact_prompt == "question"
    qa = [s for s in world.split("train", task="fact_qa") if s.template_id == "fact_qa/main"]
    assert qa and all(s.prompt.startswith("question : what is the ") for s in qa)
    cloze = build_world(WorldConfig(**{**CFG.to_dict(), "tasks": CFG.tasks, "fact_prompt": "cloze"}))
    main = [s for s in cloze.split("train", task="fact_qa") if s.template_id == "fact_qa/main"]
    f = cloze.fact(main[0].fact_id)
    assert main[0].prompt == f"the {f.attribute} of {f.entity} is"
    # only the fact prompts change: same facts, corpus, targets and other tasks
    assert cloze.pretrain_corpus == world.pretrain_corpus
    assert [s.response for s in cloze.samples] == [s.response for s in world.samples]
    assert [s.prompt for s in cloze.samples if s.task != "fact_qa"] == [s.prompt for s in world.samples
                                                                         if s.task != "fact_qa"]
    with pytest.raises(ValueError, match=r"fact_prompt must be one of \('question', 'cloze'\)"):
        WorldConfig(fact_prompt="essay")


def test_paraphrased_inconsistency_is_additive(world):
    # default 0: exact duplicate pairs only; the correct answer of each pair is recorded on both copies
    assert CFG.paraphrase_share == 0.0
    pairs = [s for s in world.split("train") if s.planted_cause == "inconsistency"]
    assert pairs and all(s.true_response is not None for s in pairs)
    assert all(s.true_response is None for s in world.samples if s.planted_cause != "inconsistency")
    para = build_world(WorldConfig(**{**CFG.to_dict(), "tasks": CFG.tasks, "fact_prompt": "cloze",
                                      "paraphrase_share": 1.0}))
    cloze = build_world(WorldConfig(**{**CFG.to_dict(), "tasks": CFG.tasks, "fact_prompt": "cloze"}))
    # same corpus, vocabulary (the pretrained model's cache key) and targets; only fact-QA pair prompts change
    assert para.pretrain_corpus == cloze.pretrain_corpus and para.vocabulary() == cloze.vocabulary()
    assert [s.response for s in para.samples] == [s.response for s in cloze.samples]
    changed = [(a, b) for a, b in zip(para.samples, cloze.samples) if a.prompt != b.prompt]
    assert changed and all(a.task == "fact_qa" and a.planted_cause == "inconsistency" for a, _ in changed)
    f = para.fact(changed[0][0].fact_id)
    assert changed[0][0].prompt in (f"{f.entity} 's {f.attribute} is",
                                    f"people say that the {f.attribute} of {f.entity} is")
    # each pair: one copy answers the fact, the other copy (the paraphrase) another value
    for a, _ in changed:
        assert a.true_response == para.fact(a.fact_id).value != a.response
