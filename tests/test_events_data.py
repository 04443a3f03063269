"""Loader, validation (one malformed document per error kind), split, synthetic layout, fetch."""
import io
import json
import zipfile

import numpy as np
import pytest

from epi_utils.events import fetch as fetch_mod
from epi_utils.events.data import (
    DocumentError,
    EmptyDataError,
    load_documents,
    parse_document,
    reachable_share,
    split_documents,
    truncate_document,
)
from epi_utils.events.schema import load_schema, schema_from_dict
from epi_utils.events.synthetic import generate_documents
from epi_utils.workbench.datasets import sha256_file

SCHEMA = schema_from_dict({"events": [{"event_type": "Pay", "roles": ["Payer", "Amount"]},
                                      {"event_type": "Move", "roles": ["Mover", "Place", "Date"]}],
                           "common_fields_entity_only": ["Code"]})


def good_doc():
    return {"sentences": ["张三付了100元。", "李四搬到北京。"],
            "ann_valid_mspans": ["张三", "100元", "李四", "北京"],
            "ann_valid_dranges": [[0, 0, 2], [0, 4, 8], [1, 0, 2], [1, 4, 6]],
            "ann_mspan2dranges": {"张三": [[0, 0, 2]], "100元": [[0, 4, 8]], "李四": [[1, 0, 2]], "北京": [[1, 4, 6]]},
            "ann_mspan2guess_field": {"张三": "Payer", "100元": "Amount", "李四": "Mover", "北京": "Place"},
            "recguid_eventname_eventdict_list": [[0, "Pay", {"Payer": "张三", "Amount": "100元"}],
                                                 [1, "Move", {"Mover": "李四", "Place": "北京", "Date": None}]]}


def bad(kind):
    d = good_doc()
    if kind == "range_out_of_bounds":
        d["ann_mspan2dranges"]["北京"] = [[1, 4, 60]]
    elif kind == "range_text_mismatch":
        d["ann_mspan2dranges"]["北京"] = [[1, 3, 5]]
    elif kind == "unknown_role":
        d["recguid_eventname_eventdict_list"][0][2]["Victim"] = None
    elif kind == "unknown_event_type":
        d["recguid_eventname_eventdict_list"][0][1] = "Explode"
    elif kind == "argument_not_mention":
        d["recguid_eventname_eventdict_list"][1][2]["Date"] = "昨天"
    elif kind == "structure":
        d["sentences"] = "not a list"
    return d


KINDS = ["range_out_of_bounds", "range_text_mismatch", "unknown_role", "unknown_event_type",
         "argument_not_mention", "structure"]


def test_good_document_parses_in_schema_role_order():
    doc = parse_document(7, good_doc(), SCHEMA)
    assert doc.doc_id == "7" and doc.records[1] == ("Move", ("李四", "北京", None))
    assert doc.is_multi and doc.records_by_type(SCHEMA)[0] == [("张三", "100元")]


@pytest.mark.parametrize("kind", KINDS)
def test_each_error_names_document_and_field(kind):
    with pytest.raises(DocumentError) as info:
        parse_document("doc-42", bad(kind), SCHEMA)
    err = info.value
    assert err.kind == kind and err.doc_id == "doc-42"
    assert "doc-42" in str(err) and err.field in str(err)


def _write_jsonl(path, pairs):
    path.write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in pairs) + "\n", encoding="utf-8")


def test_skip_counts_every_error_kind_and_raise_fails(tmp_path):
    pairs = [[0, good_doc()]] + [[i + 1, bad(k)] for i, k in enumerate(KINDS)]
    f = tmp_path / "docs.jsonl"
    _write_jsonl(f, pairs)
    docs, rep = load_documents(f, SCHEMA, on_error="skip")
    record_kinds = ["unknown_role", "unknown_event_type", "argument_not_mention"]  # one bad record, one good
    assert len(docs) == 4 and rep.n_read == 7 and rep.n_skipped == 3
    assert dict(rep.skipped) == {k: 1 for k in KINDS if k not in record_kinds}
    assert dict(rep.dropped_records) == {k: 1 for k in record_kinds}
    assert "skipped 3" in rep.summary() and "records dropped from kept documents" in rep.summary()
    with pytest.raises(DocumentError, match="document '1'"):
        load_documents(f, SCHEMA, on_error="raise")
    with pytest.raises(ValueError, match="on_error"):
        load_documents(f, SCHEMA, on_error="ignore")


def test_json_array_and_jsonl_give_the_same_documents(tmp_path):
    pairs = [[i, good_doc()] for i in range(3)]
    a, b = tmp_path / "train.json", tmp_path / "test.jsonl"
    a.write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    _write_jsonl(b, pairs)
    da, _ = load_documents(a, SCHEMA, on_error="raise")
    db, _ = load_documents(b, SCHEMA, on_error="raise")
    assert [d.records for d in da] == [d.records for d in db] and len(da) == 3


def test_truncation_keeps_gold_records_and_reports_reachability():
    doc = parse_document(1, good_doc(), SCHEMA)
    t = truncate_document(doc, max_sentences=1, max_sentence_chars=100)
    assert set(t.mentions) == {"张三", "100元"} and t.records == doc.records
    assert reachable_share([doc], [t]) == pytest.approx(2 / 4)


def test_split_is_seeded_stratified_and_disjoint():
    raw = generate_documents(SCHEMA, n_docs=50, rng=np.random.default_rng(0), min_events=1, max_events=3)
    docs = [parse_document(i, d, SCHEMA) for i, d in raw]
    a, b = split_documents(docs, seed=3), split_documents(docs, seed=3)
    assert [d.doc_id for d in a["test"]] == [d.doc_id for d in b["test"]]
    ids = [d.doc_id for part in a.values() for d in part]
    assert sorted(ids) == sorted(d.doc_id for d in docs)
    assert split_documents(docs, seed=4)["test"] != a["test"]
    with pytest.raises(ValueError):
        split_documents(docs, seed=0, fractions=(0.5, 0.5, 0.5))


def test_synthetic_documents_validate_and_plant_records():
    rng = np.random.default_rng(1)
    raw = generate_documents(SCHEMA, n_docs=30, rng=rng, min_events=2, max_events=4, share_prob=1.0)
    docs = [parse_document(i, d, SCHEMA) for i, d in raw]
    assert all(2 <= d.num_records <= 4 for d in docs)
    shared = sum(len(set(a[0] for t, a in d.records if t == "Pay")) < sum(t == "Pay" for t, _ in d.records) for d in docs)
    assert shared > 0  # argument sharing between records happens


def test_real_schema_file_loads(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(SCHEMA.to_dict()), encoding="utf-8")
    s = load_schema(p)
    assert s.event_types == ("Pay", "Move") and s.roles_of("Move") == ("Mover", "Place", "Date")
    with pytest.raises(ValueError, match="roles"):
        schema_from_dict({"events": [{"event_type": "X", "roles": "abc"}]})
    with pytest.raises(KeyError, match="allowed"):
        s.type_index("Nope")


def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Data/train.json", json.dumps([[0, good_doc()]], ensure_ascii=False))
        zf.writestr("Data/test.json", json.dumps([[1, good_doc()]], ensure_ascii=False))
    return buf.getvalue()


def test_fetch_from_file_url_with_sha256(tmp_path):
    z = tmp_path / "Data.zip"
    z.write_bytes(_zip_bytes())
    digest = sha256_file(z)
    dest = fetch_mod.fetch_chfinann(tmp_path / "out", url=z.as_uri(), sha256=digest)
    assert (dest / "train.json").exists() and (dest / "test.json").exists()
    assert (dest / "chfinann_event_schema.json").exists()
    docs, rep = load_documents(dest / "train.json", SCHEMA, on_error="raise")
    assert rep.n_kept == 1
    with pytest.raises(ValueError, match="sha256"):
        fetch_mod.fetch_chfinann(tmp_path / "out2", url=z.as_uri(), sha256="0" * 64)
    assert not list((tmp_path / "out2").glob("*.json"))


def test_fetch_with_injected_downloader_warns_without_digest(tmp_path):
    calls = []

    def fake(url, target):
        calls.append(url)
        target.write_bytes(_zip_bytes())

    with pytest.warns(UserWarning, match="not checked"):
        fetch_mod.fetch_chfinann(tmp_path / "d", downloader=fake, sha256=None)
    assert calls == [fetch_mod.DOC2EDAG_DATA_URL]
    fetch_mod.fetch_chfinann(tmp_path / "d", downloader=fake)  # already fetched: no new download
    assert len(calls) == 1


# ------------------------------------------------------------------ issue 12: bad input, clear and early
def test_truncated_json_line_is_skipped_with_full_path_and_line(tmp_path):
    f = tmp_path / "sub" / "docs.jsonl"
    f.parent.mkdir()
    lines = [json.dumps([i, good_doc()], ensure_ascii=False) for i in range(3)]
    lines[1] = lines[1][:40]  # a line cut off mid-way
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, rep = load_documents(f, SCHEMA, on_error="skip")
    assert [d.doc_id for d in docs] == ["0", "2"] and rep.skipped == {"structure": 1}
    assert f"{f.resolve()}:2" in rep.messages[0] and "invalid JSON" in rep.messages[0]
    with pytest.raises(DocumentError, match=f"{f.resolve()}:2"):
        load_documents(f, SCHEMA, on_error="raise")


def test_truncated_pretty_printed_array_keeps_the_documents_before_the_cut(tmp_path):
    f = tmp_path / "train.json"
    text = json.dumps([[i, good_doc()] for i in range(3)], ensure_ascii=False, indent=2)
    cut = text.index('"2"') if '"2"' in text else text.rindex("[\n    2")
    f.write_text(text[:cut + 40], encoding="utf-8")
    docs, rep = load_documents(f, SCHEMA, on_error="skip")
    assert [d.doc_id for d in docs] == ["0", "1"] and rep.skipped == {"structure": 1}
    bad_line = text[:cut].count("\n") + 1
    assert bad_line > 1 and f"{f.resolve()}:" in rep.messages[0]
    reported = int(rep.messages[0].split(f"{f.resolve()}:")[1].split(":")[0])
    assert abs(reported - bad_line) <= 1  # the entry's own line, not "line 1"


def test_unknown_event_type_drops_only_that_record(tmp_path):
    d = good_doc()
    d["recguid_eventname_eventdict_list"].append([2, "Explode", {"Payer": "张三"}])
    f = tmp_path / "docs.jsonl"
    _write_jsonl(f, [["d1", d]])
    (doc,), rep = load_documents(f, SCHEMA, on_error="skip")
    assert doc.records == [("Pay", ("张三", "100元")), ("Move", ("李四", "北京", None))]
    assert rep.dropped_records == {"unknown_event_type": 1} and rep.n_skipped == 0
    assert "Explode" in rep.messages[0] and "document kept" in rep.messages[0] and str(f.resolve()) in rep.messages[0]


def test_empty_file_or_folder_stops_with_counts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDataError, match="holds no document files"):
        load_documents(tmp_path / "empty", SCHEMA)
    (tmp_path / "empty" / "test.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(EmptyDataError, match="read 0 documents"):
        load_documents(tmp_path / "empty", SCHEMA)
    f = tmp_path / "all_bad.jsonl"
    _write_jsonl(f, [[1, bad("structure")], [2, bad("range_out_of_bounds")]])
    with pytest.raises(EmptyDataError, match="first reasons.*sentences"):
        load_documents(f, SCHEMA)


def test_a_split_left_empty_stops_before_training(tmp_path):
    docs = [parse_document(i, good_doc(), SCHEMA) for i in range(3)]
    with pytest.raises(EmptyDataError, match=r"split\(s\) \['dev'\].*train 2, dev 0, test 1"):
        split_documents(docs, seed=0, fractions=(0.7, 0.1, 0.2))


def test_misspelled_schema_file_is_an_error_not_the_chfinann_fallback(tmp_path, monkeypatch):
    from epi_utils.events import prepare
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "train.json").write_text("[]")  # a folder with data, only the schema name is wrong
    monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="chfinan_schema.json"):
        prepare.locate_data("mydata", "chfinan_schema.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_schema(tmp_path / "mydata" / "chfinan_schema.json")


def test_ignored_field_with_odd_nesting_only_warns(tmp_path):
    d = good_doc()
    d["ann_valid_dranges"] = [[[0, 0, 2]], [[1, 0, 2]]]  # one level deeper than Doc2EDAG writes it
    f = tmp_path / "docs.jsonl"
    _write_jsonl(f, [[1, d], [2, good_doc()]])
    docs, rep = load_documents(f, SCHEMA, on_error="raise")
    assert len(docs) == 2 and rep.warnings == {"ann_valid_dranges": 1}
    assert "ann_valid_dranges in 1 document(s)" in rep.summary()
    d["ann_mspan2dranges"]["张三"] = [[[0, 0, 2]]]  # the same nesting in a field the model reads is an error
    with pytest.raises(DocumentError, match="ann_mspan2dranges"):
        parse_document(1, d, SCHEMA)


def test_two_data_set_folders_never_read_a_document_twice(tmp_path):
    """The subset (docee/chfinann) and the full release (docee/chfinann_full, fetched into its own
    folder) share documents; each folder reads alone without repeats, and a folder mixing them fails."""
    subset = tmp_path / "docee" / "chfinann"
    full = tmp_path / "docee" / "chfinann_full"
    subset.mkdir(parents=True)
    full.mkdir(parents=True)
    _write_jsonl(subset / "test_split1.jsonl", [[f"s{i}", good_doc()] for i in range(4)])
    (full / "train.json").write_text(json.dumps([[f"t{i}", good_doc()] for i in range(5)], ensure_ascii=False))
    (full / "test.json").write_text(json.dumps([[f"s{i}", good_doc()] for i in range(4)], ensure_ascii=False))
    for folder in (subset, full):
        docs, _ = load_documents(folder, SCHEMA)
        ids = [d.doc_id for d in docs]
        assert len(ids) == len(set(ids))
    assert len(load_documents(full, SCHEMA)[0]) == 9 and len(load_documents(subset, SCHEMA)[0]) == 4
    # what an unpacked release inside the subset's folder would do: refused, naming both places
    (subset / "test.json").write_text((full / "test.json").read_text())
    with pytest.raises(ValueError, match="read twice.*one data set"):
        load_documents(subset, SCHEMA)


def _write_split_files(folder, docs_by_file):
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in docs_by_file.items():
        (folder / name).write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    return folder


def test_a_document_in_two_split_files_is_an_error_naming_both_files(tmp_path):
    """Doc2EDAG's own train/dev/test files: a document id present in train.json and test.json would
    leak the test set into training; the load refuses it and names both files."""
    from epi_utils.events.prepare import SplitFileError, load_split_files
    folder = _write_split_files(tmp_path / "release", {"train.json": [[f"t{i}", good_doc()] for i in range(4)] + [["x", good_doc()]],
                                                       "dev.json": [[f"d{i}", good_doc()] for i in range(2)],
                                                       "test.json": [[f"s{i}", good_doc()] for i in range(2)] + [["x", good_doc()]]})
    with pytest.raises(SplitFileError, match=r"1 document id\(s\) of test\.json also in train\.json.*'x'"):
        load_split_files(folder, ("train.json", "dev.json", "test.json"), SCHEMA)
    with pytest.raises(SplitFileError, match=r"dev\.json also in dev\.json"):   # one file named twice
        load_split_files(folder, ("train.json", "dev.json", "dev.json"), SCHEMA)
    from epi_utils.events import Config
    from epi_utils.workbench.contract import ConfigError
    with pytest.raises(ConfigError, match="EventConfig.split_files: must not repeat a value"):
        Config(split_files=["train.json", "dev.json", "dev.json"])


def test_the_load_report_of_split_files_is_complete_per_file_and_says_where_the_split_came_from(tmp_path):
    from epi_utils.events.prepare import load_split_files, prepare_data
    odd = good_doc()
    odd["ann_valid_dranges"] = [[[0, 0, 2]]]                      # an ignored field with an odd shape: a warning
    folder = _write_split_files(tmp_path / "release", {"train.json": [[f"t{i}", good_doc()] for i in range(3)],
                                                       "dev.json": [["d0", good_doc()], ["d1", bad("unknown_event_type")]],
                                                       "test.json": [["s0", odd], ["s1", bad("structure")]]})
    (folder / "schema.json").write_text(json.dumps({"events": [{"event_type": "Pay", "roles": ["Payer", "Amount"]},
                                                               {"event_type": "Move", "roles": ["Mover", "Place", "Date"]}],
                                                    "common_fields_entity_only": ["Code"]}), encoding="utf-8")
    full, report, per_file = load_split_files(folder, ("train.json", "dev.json", "test.json"), SCHEMA)
    assert [len(full[k]) for k in ("train", "dev", "test")] == [3, 2, 1]
    assert list(per_file) == ["train.json", "dev.json", "test.json"]
    assert per_file["dev.json"].dropped_records == {"unknown_event_type": 1}
    assert per_file["test.json"].skipped == {"structure": 1} and per_file["test.json"].warnings == {"ann_valid_dranges": 1}
    assert (report.n_read, report.n_kept) == (7, 6)                      # every file's counts, summed
    assert report.dropped_records == {"unknown_event_type": 1} and report.warnings == {"ann_valid_dranges": 1}
    assert report.skipped == {"structure": 1} and len(report.files) == 3
    data = prepare_data(folder, folder / "schema.json", split_seed=0, split_files=("train.json", "dev.json", "test.json"),
                        max_sentences=8, max_sentence_chars=64)
    text = data.describe()
    assert "Split from the files train.json (train), dev.json (dev), test.json (test)" in text and "Split (seed" not in text
    assert "dev.json: read 2 documents" in text and "records dropped from kept documents: unknown_event_type=1" in text


def test_a_seeded_split_still_says_its_seed_and_fractions(tmp_path):
    from epi_utils.events.prepare import synthetic_data
    data = synthetic_data(SCHEMA, n_docs=40, seed=3, max_sentences=8, max_sentence_chars=64)
    assert "Split (seed 3, fractions [0.7, 0.1, 0.2], stratified by single/multi)" in data.describe()
    assert data.per_file == {}
