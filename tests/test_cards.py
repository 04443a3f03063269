"""Result cards for the index: headline numbers and answer sentences from verdict data, by hand."""
import json

import pytest

from epi_utils.workbench.cards import Card, Headline, answer_sentence, card_html, headlines_from
from epi_utils.workbench.stats import compare, interval


def test_headline_text_rounds_to_its_interval():
    h = Headline("forgetting of task 0, full SFT", 0.7778, 0.6987, 0.8568, "share of facts", "95% t-interval over 8 seeds")
    assert h.text() == "forgetting of task 0, full SFT: 0.778 [0.699, 0.857] share of facts (95% t-interval over 8 seeds)"
    assert Headline("seeds where EPI retains more", 0, unit="seeds").text() == "seeds where EPI retains more: 0 seeds"
    with pytest.raises(ValueError, match="metrics key"):
        Headline("arms.full_sft.forgetting0", 0.7778)


def test_headline_from_interval():
    # [1, 2, 3]: mean 2, t half-width 2.484138 -> one decimal
    h = Headline.from_interval("score", interval([1.0, 2.0, 3.0], unit="seeds"), unit="points")
    assert h.text() == "score: 2.0 [-0.5, 4.5] points (95% t-interval over 3 seeds)"
    one = Headline.from_interval("score", interval([0.5], unit="seeds"))
    assert one.text() == "score: 0.500 (1 seeds, no interval)"
    assert [x.name for x in headlines_from([("a", interval([1.0, 2.0], unit="seeds"), "")])] == ["a"]


def test_answer_sentences_follow_the_verdict():
    # a - b = [0.04, 0.03, 0.05, 0.02]: mean 0.035, sd 0.012910, se 0.006455, t_{0.975,3} = 3.182446 ->
    # half-width 0.020543 -> [0.014457, 0.055543] -> 3 decimals; t = 5.4222 on 3 dof -> p = 0.0123
    a, b = [0.52, 0.71, 0.93, 0.60], [0.48, 0.68, 0.88, 0.58]
    better = compare(a, b, unit="seeds", metric="acc")
    assert answer_sentence(better, a="EPI", b="full SFT", metric="accuracy on task 1") == (
        "EPI is better than full SFT on accuracy on task 1: EPI - full SFT = 0.035 [0.014, 0.056] (4 seeds, p = 0.01).")
    # lower is better (forgetting): the lower side wins, the difference keeps its sign
    lower = compare(b, a, unit="seeds", higher_is_better=False)
    assert answer_sentence(lower, a="EPI", b="full SFT", metric="forgetting") == (
        "EPI is better than full SFT on forgetting: EPI - full SFT = -0.035 [-0.056, -0.014] (4 seeds, p = 0.01).")
    assert answer_sentence(compare(a, b, unit="seeds", higher_is_better=False), a="EPI", b="SFT", metric="loss") \
        .startswith("SFT is better than EPI on loss: EPI - SFT = 0.035")
    # null result: a - b = [1, 2, 3] -> 2.0 [-0.5, 4.5], p = 0.074, detectable 2.484 -> "2.5"
    null = compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], unit="seeds")
    assert answer_sentence(null, a="EPI", b="static", metric="retention", unit="points") == (
        "No difference between EPI and static on retention was detected: EPI - static = 2.0 [-0.5, 4.5] points "
        "(3 seeds, p = 0.07); the design could detect a difference of about 2.5 points.")
    few = compare([1.0], [0.0], unit="seeds")
    assert answer_sentence(few, a="EPI", b="SFT", metric="acc") == "Too few paired seeds (1) to compare EPI with SFT on acc."


def test_card_round_trip_and_html():
    heads = (Headline("macro F1, learned threshold", 0.61234, 0.58, 0.64, "", "95% t-interval over 3 seeds"),
             Headline("macro F1, fixed threshold", 0.6, 0.57, 0.63),
             Headline("episodes", 600.0))
    card = Card("Does a learned per-instance threshold beat a fixed one?", "No difference ... detected.", heads,
                figure="results_bars")
    data = json.loads(json.dumps(card.to_dict()))
    assert Card.from_dict(data) == card
    page = card_html(data, title="05 few-shot ACD", report_href="05_fewshot_acd/report.html",
                     figure_src="05_fewshot_acd/figures/results_bars.png")
    assert '<a href="05_fewshot_acd/report.html">05 few-shot ACD</a>' in page
    assert "<td>macro F1, learned threshold</td><td>0.612 [0.580, 0.640]</td>" in page
    assert "<td>episodes</td><td>600</td>" in page and 'src="05_fewshot_acd/figures/results_bars.png"' in page
    with pytest.raises(ValueError, match="3-5 headline"):
        Card("q?", "a.", heads[:2])
    with pytest.raises(ValueError, match="one non-empty line"):
        Card("two\nlines", "a.", heads)
