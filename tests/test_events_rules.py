"""Rule candidates learned from the data at hand (issue 29): shapes of annotated mentions, their precision on
train, the schema file's own patterns passed through to the candidates, by hand."""
import re
from types import SimpleNamespace

import pytest

from epi_utils.events.rules import RuleSet, build_rule_set, derive_patterns, pattern_precision, rule_mentions, shape_pattern
from epi_utils.events.schema import schema_from_dict


def test_shape_patterns_of_values_and_none_for_plain_words():
    assert shape_pattern("公司") is None
    date = shape_pattern("2018年9月6日")
    assert re.fullmatch(date, "2019年12月31日") and not re.fullmatch(date, "2019年12月")
    money = shape_pattern("9.26元")
    assert re.findall(money, "价格9.26元，或12.5元") == ["9.26元", "12.5元"]
    shares = shape_pattern("76762170股")
    assert re.findall(shares, "共12股") == ["12股"]          # never the 2股 inside 12股
    assert re.findall(shape_pattern("600703"), "代码600703.SH，1.5") == ["600703"]   # no piece of the number 1.5


def test_derived_patterns_need_support_and_precision_is_counted_per_document():
    docs = [SimpleNamespace(sentences=["买入3股和5股", "卖出7股"], mentions={"3股": 0, "7股": 0}),
            SimpleNamespace(sentences=["持有9股"], mentions={"9股": 0})]
    pats = derive_patterns([d.mentions for d in docs], min_support=3)
    assert list(pats.values()) == [shape_pattern("3股")]
    assert derive_patterns([d.mentions for d in docs], min_support=4) == {}
    # doc 1 matches {3股, 5股, 7股} (2 annotated), doc 2 {9股} (1 annotated): precision 3/4 over 4 matches
    (kind,) = pats
    assert pattern_precision(pats, docs) == {kind: (0.75, 4)}


def test_the_gate_keeps_user_patterns_and_drops_imprecise_candidates():
    docs = [SimpleNamespace(sentences=["编号AB12，代码X9"], mentions={"AB12": 0, "CD34": 0, "EF56": 0})] * 3
    rs = build_rule_set(docs, user={"mine": r"X\d"}, builtin=False, min_support=3)
    assert set(rs.patterns(None)) == {"mine"}
    assert any(k.startswith("shape:") for k in rs.patterns(0.0))
    assert isinstance(rs, RuleSet) and all(r["used"] for r in rs.table() if r["source"].startswith("user"))
    assert rule_mentions(["代码X9"], patterns=rs.patterns(None)) == {"X9": ("", [(0, 2, 4)])}


def test_schema_file_patterns_and_name_are_read_and_checked():
    s = schema_from_dict({"events": [{"event_type": "A", "roles": ["x"]}], "name": "Demo", "patterns": {"id": r"ID\d+"}})
    assert s.name == "Demo" and s.patterns == (("id", r"ID\d+"),)
    with pytest.raises(ValueError, match="regular expression"):
        schema_from_dict({"events": [{"event_type": "A", "roles": ["x"]}], "patterns": {"bad": "("}})


def test_the_transfer_demo_writes_a_doc2edag_folder_that_loads_with_its_own_schema(tmp_path):
    from epi_utils.events.demo import DEMO_SCHEMA, main
    from epi_utils.events.prepare import prepare_data

    folder = main([str(tmp_path / "transfer"), "--docs", "40"])
    data = prepare_data(folder, folder / DEMO_SCHEMA, split_seed=0, max_sentences=8, max_sentence_chars=64)
    assert data.report.n_kept == 40 and data.schema.event_types == ("Launch", "Dock", "Undock", "Contract")
    assert data.name.startswith("transfer demo") and "Launch" in data.describe()
    assert data.schema.twin_types() == [("Dock", "Undock")]
