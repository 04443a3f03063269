"""FewAsp loader: validation errors name file and category; missing splits say how to fetch;
fetch verifies sha256 (with a fake downloader, no network)."""
import hashlib
import json

import pytest

from epi_utils.acd import data as D

GOOD = {"food": [[["great", "pizza"], ["food"]], [["tasty", "and", "cheap"], ["food", "price"]]],
        "price": [[["too", "expensive"], ["price"]], [["tasty", "and", "cheap"], ["food", "price"]]]}


def write_dataset(root, name="FewAsp(multi)", splits=("val", "test"), obj=GOOD):
    (root / name).mkdir(parents=True, exist_ok=True)
    for s in splits:
        (root / name / f"{s}.json").write_text(json.dumps(obj))
    return root


def test_parse_deduplicates_multilabel_sentences():
    sp = D.parse_split(GOOD, source="x.json")
    assert len(sp) == 3 and sp.n_instances == 4
    shared = sp.sentences.index(("tasty", "and", "cheap"))
    assert shared in sp.by_class["food"] and shared in sp.by_class["price"]
    assert sp.aspects[shared] == frozenset({"food", "price"})
    assert sorted(sp.label_counts()) == [1, 1, 2]


@pytest.mark.parametrize("bad, needle", [
    ({"food": [[["nice"], ["price"]]], "price": [[["x"], ["price"]]]}, "key category 'food' is not in"),
    ({"food": [[[], ["food"]]]}, "empty sentence"),
    ({"food": [[["  "], ["food"]]]}, "empty sentence"),
    ({"food": [[["nice"], ["food", "ambience"]]]}, "['ambience'] are not classes"),
    ({"food": [[["a", "b"], ["food"]]], "price": [[["a", "b"], ["price", "food"]]]}, "same sentence"),
    ({"food": "oops"}, "non-empty list"),
])
def test_malformed_records_name_file_and_category(bad, needle):
    with pytest.raises(D.FewAspFormatError) as err:
        D.parse_split(bad, source="FewAsp(multi)/test.json")
    msg = str(err.value)
    assert needle in msg and "FewAsp(multi)/test.json" in msg and "'food'" in msg


def test_missing_train_split_says_fetch(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(D.FewAspMissingError, match=r"FewAsp\(multi\)/train.json is missing.*epi data fetch fewasp"):
        D.load_split("FewAsp(multi)", "train", root=tmp_path)
    assert D.load_split("FewAsp(multi)", "val", root=tmp_path).n_instances == 4
    with pytest.raises(ValueError, match="split must be one of"):
        D.load_split("FewAsp(multi)", "dev", root=tmp_path)


def test_shared_copy_reports_missing_train_files():
    root = D._root(None)
    if not (root / "FewAsp(single)" / "train.json").exists():
        pytest.skip("shared FewAsp data not present")
    for ds in ("FewAsp(multi)", "FewAsp"):
        if not D.has_split(ds, "train"):
            with pytest.raises(D.FewAspMissingError, match="epi data fetch fewasp"):
                D.load_split(ds, "train")
    test = D.load_split("FewAsp(multi)", "test")
    assert len(test.classes) == 20 and test.n_instances == 8000 and len(test) == 7809


def test_fetch_verifies_hashes_and_falls_back(tmp_path):
    files = {"separate.json": json.dumps({"train": ["food", "price"], "validation": ["food", "price"],
                                          "test": ["food", "price"]}).encode()}
    for ds in D.DATASETS:
        for s in D.SPLITS:
            files[f"{ds}/{s}.json"] = json.dumps(GOOD).encode()
    hashes = {k: hashlib.sha256(v).hexdigest() for k, v in files.items() if "train" not in k}
    calls = []

    def fake(url):
        calls.append(url)
        if url.startswith("https://bad"):
            return b"corrupted"
        import urllib.parse
        return files[urllib.parse.unquote(url.split("/good/", 1)[1])]

    root = D.fetch_fewasp(tmp_path / "data", mirrors=("https://bad/x", "https://good/"), downloader=fake, hashes=hashes)
    assert root == tmp_path / "data" / "fewasp"
    report = json.loads((root / "FETCHED.json").read_text())
    assert set(report) == set(files)
    assert report["FewAsp/val.json"]["verified"] == "yes"
    # train files have no reference hash: the corrupted first mirror fails validation, the second wins
    assert report["FewAsp(multi)/train.json"]["verified"] == "no-reference"
    assert report["FewAsp(multi)/train.json"]["source"].startswith("https://good/")
    assert "FewAsp%28multi%29/train.json" in report["FewAsp(multi)/train.json"]["source"]
    assert D.load_split("FewAsp(multi)", "train", root=root).n_instances == 4
    again = D.download_fewasp(root, mirrors=("https://bad/x",), downloader=fake, hashes=hashes)
    assert all(v["source"] == "existing" for v in again.values())
    with pytest.raises(D.FewAspError, match=r"sha256 .* != expected"):
        D.download_fewasp(tmp_path / "new", mirrors=("https://bad/x",), downloader=fake, hashes=hashes)
