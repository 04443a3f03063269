"""Doc2EDAG protocol: hand-computed TP/FP/FN and P/R/F1 (Zheng et al., EMNLP 2019)."""
import pytest

from epi_utils.events.metric import agg_role_stats, evaluate_documents, prf, recall_by_event_count
from epi_utils.events.schema import schema_from_dict


def totals(stats):
    return [sum(s[i] for s in stats) for i in range(3)]


def test_no_gold_every_filled_prediction_slot_is_fp():
    assert agg_role_stats([("a", "b", None)], None, 3) == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert agg_role_stats([("a", "b", None)], [], 3) == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_no_prediction_every_filled_gold_slot_is_fn():
    assert agg_role_stats(None, [("a", None, "c")], 3) == [[0, 0, 1], [0, 0, 0], [0, 0, 1]]
    assert agg_role_stats(None, None, 3) == [[0, 0, 0]] * 3


def test_duplicate_prediction_counts_as_false_positives():
    stats = agg_role_stats([("a", "b", "c"), ("a", "b", "c")], [("a", "b", "c")], 3)
    assert stats == [[1, 1, 0]] * 3
    s = prf(*totals(stats))
    assert s["p"] == pytest.approx(0.5) and s["r"] == pytest.approx(1.0) and s["f1"] == pytest.approx(2 / 3)


def test_partially_filled_record():
    # role 0 equal -> TP; role 1 wrong -> FP+FN; role 2 gold empty, predicted -> FP
    stats = agg_role_stats([("a", "x", "c")], [("a", "b", None)], 3)
    assert stats == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]
    s = prf(*totals(stats))
    assert (s["p"], s["r"], s["f1"]) == pytest.approx((1 / 3, 1 / 2, 0.4))


def test_empty_slots_count_as_matches_when_choosing_the_gold_record():
    # Doc2EDAG's similarity counts None == None: the prediction ties (2 vs 2) and takes the
    # first gold record, so 'b' is not credited even though it is gold[1]'s first argument.
    stats = agg_role_stats([("b", None, None)], [("a", None, None), ("b", "c", None)], 3)
    assert totals(stats) == [0, 1, 3]


def test_predictions_are_matched_in_order_of_filled_slots():
    golds = [("a", "b", "x"), ("a", "b", "c")]
    # the fuller prediction is matched first and takes the exact gold record
    stats = agg_role_stats([("a", "b", None), ("a", "b", "c")], golds, 3)
    assert totals(stats) == [5, 0, 1]


def test_wrong_slot_count_raises():
    with pytest.raises(ValueError, match="slots"):
        agg_role_stats([("a",)], [("a", "b")], 2)


SCHEMA = schema_from_dict({"events": [{"event_type": "A", "roles": ["r1", "r2"]},
                                      {"event_type": "B", "roles": ["s1", "s2", "s3"]}]})


def test_document_level_micro_single_multi_per_type_macro():
    gold = [[("A", ("x", "y"))],
            [("A", ("p", "q")), ("B", ("u", None, "w"))]]
    pred = [[("A", ("x", "y"))],
            [("A", ("p", None)), ("B", ("u", "v", "z"))]]
    r = evaluate_documents(pred, gold, SCHEMA)
    # doc1: A tp2. doc2: A tp1 fn1; B s1 tp, s2 fp, s3 fp+fn -> tp1 fp2 fn1
    assert (r["micro_p"], r["micro_r"], r["micro_f1"]) == pytest.approx((4 / 6, 4 / 6, 2 / 3))
    assert r["single_f1"] == pytest.approx(1.0)
    assert (r["multi_p"], r["multi_r"], r["multi_f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert r["multi_recall"] == r["multi_r"]
    assert r["per_type"]["A"]["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert r["per_type"]["B"]["f1"] == pytest.approx(0.4)
    # the old average (mean over types of each type's micro F1), under its own name
    assert r["mean_type_micro_f1"] == pytest.approx((2 * 0.75 / 1.75 + 0.4) / 2)
    # Doc2EDAG's MacroF1: role F1 averaged within the type, then over types.
    # A: r1 tp2 -> F1 1; r2 tp1 fn1 -> P 1, R 1/2, F1 2/3 => A macro F1 5/6, P 1, R 3/4.
    # B: s1 tp -> 1; s2 fp only -> P 0, R 0 (undefined), F1 0; s3 fp+fn -> 0 => B macro F1 1/3, P 1/3, R 1/3.
    assert r["per_type"]["A"]["macro_f1"] == pytest.approx(5 / 6)
    assert r["per_type"]["B"]["macro_f1"] == pytest.approx(1 / 3)
    assert r["macro_f1"] == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert r["macro_p"] == pytest.approx((1 + 1 / 3) / 2) and r["macro_r"] == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert (r["n_single"], r["n_multi"]) == (1, 1)
    by = recall_by_event_count(pred, gold, SCHEMA, bins=(1, 2))
    assert by["1"]["r"] == pytest.approx(1.0) and by["2+"]["r"] == pytest.approx(0.5)


def test_perfect_and_empty_predictions():
    gold = [[("A", ("x", "y"))], [("B", ("u", None, "w")), ("B", ("u", "k", None))]]
    assert evaluate_documents(gold, gold, SCHEMA)["micro_f1"] == 1.0
    r = evaluate_documents([[], []], gold, SCHEMA)
    assert (r["micro_p"], r["micro_r"], r["micro_f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        evaluate_documents([[]], gold, SCHEMA)


def test_mention_scores_hand_computed():
    from epi_utils.events.metric import mention_scores
    pred = [{"甲公司": ("Pledger", []), "乙": ("Pledgee", []), "100股": ("PledgedShares", [])}, {}]
    gold = [{"甲公司": [], "100股": []}, {"丙": []}]
    fields = [{"甲公司": "Pledger", "100股": "TotalHoldingShares"}, {"丙": "Pledger"}]
    s = mention_scores(pred, gold, gold_fields=fields)
    # tp 2 (甲公司, 100股), fp 1 (乙), fn 1 (丙): P 2/3, R 2/3; one of the two correct strings has the right field
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)
    assert s["p"] == pytest.approx(2 / 3) and s["r"] == pytest.approx(2 / 3) and s["field_acc"] == 0.5


def test_doc2edag_macro_counts_never_filled_roles_as_zero():
    """An exact copy of gold scores micro F1 1 but MacroF1 below 1 when some role (or type) is never
    filled: Doc2EDAG averages role F1 with those roles at 0. Gold: one B record with s2 empty.
    B: s1 1, s2 0 (never filled), s3 1 -> 2/3; A never occurs -> 0; MacroF1 = (0 + 2/3) / 2 = 1/3,
    while the mean of per-type micro F1 is (0 + 1) / 2 = 1/2."""
    gold = [[("B", ("u", None, "w"))]]
    r = evaluate_documents(gold, gold, SCHEMA)
    assert r["micro_f1"] == 1.0
    assert r["macro_f1"] == pytest.approx(1 / 3)
    assert r["mean_type_micro_f1"] == pytest.approx(1 / 2)
