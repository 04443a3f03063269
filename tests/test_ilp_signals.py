"""Planted-truth and hand-computed tests for the ILP per-sample signals."""
import json

import numpy as np
import pandas as pd
import pytest

from epi_utils.ilp import signals as sg


def _samples():
    rows = [
        # id, task, prompt, response, stage, template
        ("t/0", "qa", "What is the colour of Zorb?", "red", 0, "qa_a"),
        ("t/1", "qa", "what is the colour of zorb", "blue", 0, "qa_a"),    # duplicate prompt, other target
        ("t/2", "qa", "What is the colour of Blip?", "green", 0, "qa_a"),
        ("t/3", "qa", "What is the colour of Blip?", "green", 0, "qa_a"),  # duplicate, same target
        ("t/4", "qa", "Who founded Quux Industries?", "ada lovelace", 0, "qa_b"),
        ("t/5", "math", "3 + 4 =", "7", 1, "m_a"),
        ("t/6", "math", "3 + 5 =", "8", 1, "m_a"),
        ("t/7", "math", "12 + 30 =", "42", 1, "m_a"),
        ("t/8", "math", "list the steps for 12 + 30", "12 plus 30 equals 42 done", 1, "m_rare"),
    ]
    return pd.DataFrame(rows, columns=["sample_id", "task", "prompt", "response", "stage", "template_id"])


def test_normalize_and_jaccard_by_hand():
    assert sg.normalize_text("  What is X?  ", mode="strip") == "What is X?"
    assert sg.normalize_text("  What  IS x? ", mode="lower") == "what is x?"
    assert sg.normalize_text("What, is X?!", mode="alnum") == "what is x"
    assert sg.char_ngram_jaccard("abcd", "abce", n=3) == pytest.approx(1 / 3)
    assert sg.char_ngram_jaccard("", "", n=3) == 1.0
    with pytest.raises(sg.SignalInputError, match="normalize mode"):
        sg.normalize_text("x", mode="fancy")


def test_every_duplicated_prompt_with_conflicting_targets_is_flagged():
    out = sg.inconsistency_signals(_samples(), similarity_threshold=1.0)
    assert out.loc["t/0", "incons_flag"] and out.loc["t/1", "incons_flag"]
    assert out.loc["t/0", "incons_group_size"] == 2 and out.loc["t/0", "incons_n_targets"] == 2
    # same prompt with the same target is not an inconsistency
    assert not out.loc["t/2", "incons_flag"] and not out.loc["t/3", "incons_flag"]
    assert out.loc["t/2", "incons_group_size"] == 2 and out.loc["t/2", "incons_n_targets"] == 1
    # near-identical arithmetic prompts with different answers are not flagged at threshold 1.0
    assert not out.loc[["t/4", "t/5", "t/6", "t/7", "t/8"], "incons_flag"].any()
    # majority relabelling: tie broken by first occurrence
    assert out.loc["t/1", "incons_majority_target"] == "red"
    assert out.loc["t/0", "incons_is_majority"] and not out.loc["t/1", "incons_is_majority"]


def test_prompt_retrained_in_a_later_stage_is_an_overwrite_not_an_inconsistency():
    frame = pd.DataFrame({"sample_id": ["early", "late", "other"], "task": ["x"] * 3, "stage": [0, 1, 0],
                          "prompt": ["compute 3 plus 4", "compute 3 plus 4", "compute 5 plus 1"],
                          "response": ["7", "9", "6"]})
    out = sg.inconsistency_signals(frame, similarity_threshold=1.0)
    assert not out["incons_flag"].any()
    assert out.loc["early", "overwrite_later"] and out.loc["early", "overwrite_by"] == "late"
    assert not out.loc["late", "overwrite_later"] and not out.loc["other", "overwrite_later"]
    # one block for all stages: the pair becomes an internal inconsistency
    assert sg.inconsistency_signals(frame, similarity_threshold=1.0, block_cols=())["incons_flag"].sum() == 2


def test_near_duplicates_found_by_similarity():
    frame = pd.DataFrame({"sample_id": ["a", "b", "c"], "task": ["x"] * 3,
                          "prompt": ["what is the capital city of the land of zorbania",
                                     "what is the capital city of the land of zorbania please",
                                     "name a prime number"],
                          "response": ["blip", "blop", "7"]})
    out = sg.inconsistency_signals(frame, similarity_threshold=0.8, block_cols=("task",))
    assert out.loc["a", "incons_flag"] and out.loc["b", "incons_flag"] and not out.loc["c", "incons_flag"]
    assert out.loc["a", "incons_partner"] == "b"
    assert 0.8 <= out.loc["a", "incons_max_similarity"] < 1.0


def test_rarity_by_hand():
    out = sg.rarity_signals(_samples())
    # math prompts: "3 + 4 =", "3 + 5 =", "12 + 30 =", "list the steps for 12 + 30"; words in >= 2 of 4
    # prompts: "3", "+", "=", "12", "30" -> skeletons "3 + * =" (x2), "12 + 30 =", "* 12 + 30"
    assert out.loc["t/5", "rarity_skeleton"] == "3 + * ="
    assert out.loc["t/8", "rarity_skeleton"] == "* 12 + 30"
    assert out.loc["t/5", "rarity_group_size"] == 2 and out.loc["t/8", "rarity_group_size"] == 1
    assert out.loc["t/8", "rarity_group_share"] == pytest.approx(1 / 4)
    assert out.loc["t/8", "rarity_ratio"] == pytest.approx(1 / 2)
    assert out.loc["t/8", "rarity_target_len"] == 6
    # math lengths [1, 1, 1, 6]: mean 2.25, population std sqrt(4.6875)
    assert out.loc["t/8", "rarity_target_len_z"] == pytest.approx(3.75 / np.sqrt(4.6875))


def test_skeleton_masks_content_words_and_ignores_template_ids():
    assert sg.prompt_skeleton("the color of zabok is", {"the", "of", "is"}) == "the * of * is"
    assert sg.prompt_skeleton("please sort the numbers 3 17 5", {"sort"}) == "* sort *"
    prompts = [f"sort {i} {i + 1}" for i in range(20)] + ["please sort the numbers 1 2 3 4 5 6 7"]
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(21)], "task": "sorting", "prompt": prompts,
                          "response": ["x"] * 21})
    out = sg.rarity_signals(frame.assign(template_id="same"))
    assert out.loc["s20", "rarity_ratio"] == pytest.approx(1 / 20)
    assert (out["rarity_ratio"].iloc[:20] == 1.0).all()
    with pytest.raises(sg.SignalInputError, match="template_df"):
        sg.rarity_signals(frame, template_df=0.0)


def _dyn_rows():
    rows = []
    # sample s0 (stage 0): learned at end of stage 0, forgotten in stage 1
    for step, ts, em, loss, p in [(10, 0, 0, 2.0, 0.2), (20, 0, 1, 1.0, 0.6), (30, 1, 1, 1.2, 0.5), (40, 1, 0, 2.5, 0.1)]:
        rows.append(dict(sample_id="s0", task="qa", stage=0, train_stage=ts, step=step, epoch=step / 20,
                         loss=loss, mean_token_prob=p, exact_match=em))
    # sample s1 (stage 1): never learned, loss still falling; the stage-0 point is ignored
    for step, ts, em, loss, p in [(10, 0, 0, 9.0, 0.0), (30, 1, 0, 3.0, 0.1), (40, 1, 0, 2.0, 0.3)]:
        rows.append(dict(sample_id="s1", task="math", stage=1, train_stage=ts, step=step, epoch=step / 20,
                         loss=loss, mean_token_prob=p, exact_match=em))
    return rows


def test_dynamics_signals_by_hand():
    out = sg.dynamics_signals(sg.read_dynamics(_dyn_rows()), end_window=2)
    s0, s1 = out.loc["s0"], out.loc["s1"]
    assert s0["dyn_confidence"] == pytest.approx(np.mean([0.2, 0.6, 0.5, 0.1]))
    assert s0["dyn_variability"] == pytest.approx(np.std([0.2, 0.6, 0.5, 0.1]))
    assert s0["dyn_correctness"] == pytest.approx(0.5)
    assert s0["dyn_forgetting_events"] == 1
    assert s0["dyn_learned_in_stage"] == 1.0 and s0["dyn_stage_forgotten"]
    assert s0["dyn_loss_slope_end"] == pytest.approx(-10.0)   # loss 2.0 -> 1.0 over 10 steps, per 100
    assert s1["dyn_n_points"] == 2 and s1["dyn_correctness"] == 0.0
    assert not s1["dyn_stage_forgotten"]
    assert s1["dyn_loss_slope_end"] == pytest.approx(-10.0)


def test_dynamics_file_with_missing_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "dyn.jsonl"
    rows = _dyn_rows()
    del rows[2]["mean_token_prob"]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(sg.SignalInputError, match=r"dyn.jsonl, line 3: missing field\(s\) \['mean_token_prob'\]"):
        sg.read_dynamics(path)
    with pytest.raises(sg.SignalInputError, match="does not exist"):
        sg.read_dynamics(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(sg.SignalInputError, match="no records"):
        sg.read_dynamics(empty)


def test_sample_ids_that_do_not_match_the_data():
    samples = _samples()
    dyn = pd.DataFrame(_dyn_rows())   # ids s0/s1 are not in the samples
    with pytest.raises(sg.SignalInputError, match="do not match the data"):
        sg.signal_table(samples, dynamics=dyn)
    with pytest.raises(sg.SignalInputError, match="have no records"):
        sg.signal_table(samples, correct={"t/0": True})


def _raw_probe(ids, answers, confs, targets):
    return pd.DataFrame({"sample_id": ids, "response": targets, "base_answer": answers, "base_conf": confs,
                         "target_prob": [0.1] * len(ids),
                         "known": [a.lower() == t.lower() for a, t in zip(answers, targets)]})


def test_probe_categories_self_calibrate_on_known_prompts():
    ids = [f"k{i}" for i in range(5)] + ["conf", "miss"]
    probe = _raw_probe(ids, ["a"] * 5 + ["b", "c"], [0.99, 0.98, 0.995, 0.97, 0.99, 0.985, 0.8], ["a"] * 7)
    samples = pd.DataFrame({"sample_id": ids, "task": "qa"})
    out = sg.probe_signals(probe, samples, conflict_quantile=0.0, min_known_share=0.2)
    # threshold = min confidence on the 5 known samples = 0.97
    assert out["probe_conflict_threshold"].iloc[0] == pytest.approx(0.97)
    assert out.loc["conf", "probe_category"] == "conflict" and out.loc["conf", "conflict_flag"]
    assert out.loc["miss", "probe_category"] == "unknown" and not out.loc["miss", "conflict_flag"]
    assert (out.loc[ids[:5], "probe_category"] == "known").all()
    assert out["probe_group_known_share"].iloc[0] == pytest.approx(5 / 7)


def test_probe_does_not_apply_where_the_base_model_knows_nothing():
    ids = [f"k{i}" for i in range(5)] + [f"s{i}" for i in range(5)]
    probe = _raw_probe(ids, ["a"] * 5 + ["zz"] * 5, [0.9] * 10, ["a"] * 5 + ["b"] * 5)
    samples = pd.DataFrame({"sample_id": ids, "task": ["qa"] * 5 + ["sorting"] * 5})
    out = sg.probe_signals(probe, samples, min_known_share=0.2)
    assert (out.loc[[f"s{i}" for i in range(5)], "probe_category"] == "not_applicable").all()
    assert not out["conflict_flag"].any()
    with pytest.raises(sg.SignalInputError, match="not among the samples"):
        sg.probe_signals(probe, samples.iloc[:3])


PARA_PROMPTS = ["the color of zabok is", "zabok 's color is", "the city of zabok is", "the color of mirel is",
                "the city of mirel is", "the food of tovar is", "people say that the food of tovar is",
                "the job of kelda is", "the job of polin is", "the color of ruvek is"]
PARA_TARGETS = ["red", "blue", "rome", "red", "lima", "rice", "soup", "pilot", "baker", "red"]


def test_paraphrase_pairs_by_hand():
    prompts, targets = PARA_PROMPTS, PARA_TARGETS
    # template words (in >= half the prompts): the, of, is. (0, 1): content {color, zabok} in
    # {zabok, 's, color}, the extra "'s" is in 1 prompt and no target; (5, 6): 3 extra words
    assert sg.paraphrase_pairs(prompts, targets) == [(0, 1), (5, 6)]
    # the same targets are not an inconsistency; too many extra words are not a paraphrase
    assert sg.paraphrase_pairs(prompts, ["x"] * len(prompts)) == []
    assert sg.paraphrase_pairs(prompts, targets, max_extra=2) == [(0, 1)]


def test_reordered_or_longer_content_is_not_a_paraphrase():
    prompts = ["reverse a b", "reverse b a", "reverse a b c", "reverse d e", "reverse f g h", "reverse k l"]
    targets = ["b a", "a b", "c b a", "e d", "h g f", "l k"]
    # same skeleton ("reverse *"), or the extra word ("c") is part of a target
    assert sg.paraphrase_pairs(prompts, targets) == []
    frame = pd.DataFrame({"sample_id": [f"p{i}" for i in range(len(PARA_PROMPTS))], "task": "qa", "stage": 0,
                          "prompt": PARA_PROMPTS, "response": PARA_TARGETS})
    out = sg.inconsistency_signals(frame)
    assert out["incons_paraphrase"].tolist() == [i in (0, 1, 5, 6) for i in range(10)] == out["incons_flag"].tolist()
    assert out.loc["p0", "incons_partner"] == "p1" and out.loc["p0", "incons_group_key"] == out.loc["p1", "incons_group_key"]
    assert not sg.inconsistency_signals(frame, paraphrase=False)["incons_flag"].any()


def test_robust_length_z_by_hand():
    out = sg.rarity_signals(_samples())
    # math lengths [1, 1, 1, 6]: median 1, absolute deviations [0, 0, 0, 5] with median 0 -> their mean 1.25
    assert out.loc["t/8", "rarity_target_len_rz"] == pytest.approx(5 / 1.25)
    assert out.loc["t/5", "rarity_target_len_rz"] == 0.0
    # qa lengths [1, 1, 1, 1, 2]: median 1, deviations [0, 0, 0, 0, 1] -> mean 0.2
    assert out.loc["t/4", "rarity_target_len_rz"] == pytest.approx(1 / 0.2)
