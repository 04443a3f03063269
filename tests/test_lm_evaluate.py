"""Evaluation: exact match on a model that memorised a tiny set, pass@N, per-task accuracy, stats."""
import dataclasses

import numpy as np
import pytest
import torch

from epi_utils.data.world import Sample
from epi_utils.lm.evaluate import exact_match, greedy_generate, pass_at_n, response_stats, task_accuracy
from epi_utils.lm.train import TrainConfig, train_sft


def _s(i, task, prompt, response):
    return Sample(id=f"{task}/t/{i}", task=task, split="train", prompt=prompt, response=response, stage=0,
                  planted_cause=None, template_id=f"{task}/main")


TINY_SET = [_s(0, "arithmetic", "compute 2 plus 3", "5"), _s(1, "arithmetic", "compute 7 minus 4", "3"),
            _s(2, "reversal", "reverse a b c", "c b a"), _s(3, "reversal", "reverse q r s t", "t s r q"),
            _s(4, "sorting", "sort 9 2 5", "2 5 9"), _s(5, "key_lookup", "lookup b in a 4 b 7", "7")]


@pytest.fixture(scope="module")
def memorised(small_tiny):
    import copy
    model, tok = small_tiny
    model = copy.deepcopy(model)
    cfg = TrainConfig(lr=2e-3, batch_size=6, max_steps=60, warmup_ratio=0.0, schedule="constant",
                      task_homogeneous_batches=False, eval_every=0, eval_train=False, weight_decay=0.0)
    train_sft(model, tok, [TINY_SET], config=cfg, progress=False)
    return model, tok


def test_exact_match_on_memorised_set(memorised):
    model, tok = memorised
    correct, preds = exact_match(model, tok, TINY_SET, return_predictions=True)
    assert correct.dtype == bool and correct.shape == (6,)
    assert preds == [s.response for s in TINY_SET] and correct.all()
    wrong = [dataclasses.replace(s, response=s.response + " x") for s in TINY_SET[:3]]
    wrong.append(dataclasses.replace(TINY_SET[3], response="T S R Q"))
    assert not exact_match(model, tok, wrong).any()
    assert exact_match(model, tok, wrong[3:], normalize="lower").all()   # case-insensitive mode
    # batching does not change greedy outputs
    prompts = [s.prompt for s in TINY_SET]
    assert greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=1) == \
        greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=32)


def test_pass_at_n(memorised):
    model, tok = memorised
    g = torch.Generator().manual_seed(0)
    hit = pass_at_n(model, tok, TINY_SET, n=3, temperature=0.2, generator=g)
    assert hit.shape == (6,) and hit.all()
    impossible = [dataclasses.replace(TINY_SET[0], response="zzz-not-a-word")]
    assert not pass_at_n(model, tok, impossible, n=4, temperature=1.0, generator=g).any()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pass_at_n(model, tok, TINY_SET, n=2, temperature=0.0, generator=g)


def test_task_accuracy_hand_computed():
    samples = [_s(0, "a", "p", "r"), _s(1, "a", "p", "r"), _s(2, "b", "p", "r"), _s(3, "a", "p", "r")]
    assert task_accuracy(samples, [True, False, True, True]) == {"a": pytest.approx(2 / 3), "b": 1.0}
    with pytest.raises(ValueError, match="entries"):
        task_accuracy(samples, [True])


def test_response_stats_matches_manual_nll(memorised):
    model, tok = memorised
    stats = response_stats(model, tok, TINY_SET)
    assert [r["sample_id"] for r in stats] == [s.id for s in TINY_SET]
    assert all(r["mean_token_prob"] > 0.8 for r in stats)
    # manual: response "c b a" + <eos> after "reverse a b c <sep>"
    s = TINY_SET[2]
    ids = tok(f"{s.prompt} <sep> {s.response} <eos>", add_special_tokens=False)["input_ids"]
    n_prompt = len(tok(f"{s.prompt} <sep>", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    lp = np.array([float(logp[t - 1, ids[t]]) for t in range(n_prompt, len(ids))])
    assert stats[2]["loss"] == pytest.approx(-lp.mean(), rel=1e-5)
    assert stats[2]["mean_token_prob"] == pytest.approx(np.exp(lp).mean(), rel=1e-5)


# ----------------------------------------------------------------------------- left padding, free-form scores
def test_left_padded_generation_equals_length_grouped_decoding():
    """Planted truth: the same greedy decoding, with and without padding, on prompts of 4 lengths."""
    from epi_utils.data.world import WorldConfig, build_world
    from epi_utils.lm.evaluate import generate_left_padded
    from epi_utils.lm.models import load_model

    world = build_world(WorldConfig(seed=0, n_entities=8, tasks=("arithmetic", "reversal"), n_train_per_task=6,
                                    n_heldout_per_task=2, inconsistency_rate=0, rare_complex_rate=0,
                                    forgetting_rate=0, missing_knowledge_rate=0, conflict_rate=0))
    torch.manual_seed(0)
    model, tok = load_model("tiny", world=world, device="cpu", pretrain=False)
    prompts = ["compute 2 plus 3", "reverse a b c d e f", "reverse q", "compute 7 minus 4", "lookup b in a 4 b 7"]
    want = greedy_generate(model, tok, prompts, max_new_tokens=5)
    got = generate_left_padded(model, tok, prompts, max_new_tokens=5, batch_size=3)
    assert got == want and any(len(w.split()) > 1 for w in want)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_left_padded(model, tok, prompts, max_new_tokens=0)


def test_token_f1_rouge_l_and_gsm8k_by_hand():
    from epi_utils.lm.evaluate import gsm8k_final_answer, rouge_l, score_predictions, token_f1

    # shared {a, b}: P = R = 2/3 -> F1 2/3
    assert token_f1("a b c", "A b d.") == pytest.approx(2 / 3)
    assert token_f1("x", "a b") == 0.0 and token_f1("", "") == 1.0 and token_f1("", "a") == 0.0
    # multiset: pred "a a" vs ref "a": common 1, P = 1/2, R = 1 -> 2/3
    assert token_f1("a a", "a") == pytest.approx(2 / 3)
    # LCS("a b c d", "a c d e") = "a c d" = 3: P = R = 3/4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    # LCS("d c b a", "a b c d") = 1: P = R = 1/4 (token F1 would be 1: order matters for ROUGE-L)
    assert rouge_l("d c b a", "a b c d") == pytest.approx(0.25) and token_f1("d c b a", "a b c d") == 1.0
    assert gsm8k_final_answer("She pays 3 * 400 = 1,200 dollars.\n#### 1,200") == "1200"
    assert gsm8k_final_answer("so 5 + 7 = 12. The answer is 12.") == "12"
    assert gsm8k_final_answer("#### -3.50") == "-3.5" and gsm8k_final_answer("no number") is None
    s = score_predictions(["the answer is 1200", "#### 7", "x"], ["work 3*400\n#### 1,200", "#### 8", "#### 1"],
                          metric="gsm8k")
    assert s.tolist() == [1.0, 0.0, 0.0]
    assert score_predictions(["a  b", "a"], ["a b", "b"], metric="exact").tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="metric"):
        score_predictions(["a"], ["a"], metric="bleu")
