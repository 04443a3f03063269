"""Seeds, devices, atomic files, provenance."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from epi_utils.workbench import runs


def test_seed_everything_reproduces_all_generators():
    runs.seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    runs.seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    with pytest.raises(ValueError, match="seed"):
        runs.seed_everything(-1)


def test_resolve_device():
    assert runs.resolve_device("cpu").type == "cpu"
    assert runs.resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        runs.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            runs.resolve_device("cuda")


def test_atomic_write_json_is_valid_and_leaves_no_temp(tmp_path):
    path = runs.atomic_write_json(tmp_path / "m.json", {"x": np.float32(1.5), "nan": float("nan"),
                                                        "arr": np.arange(3), "t": torch.tensor(2)})
    assert json.loads(path.read_text()) == {"x": 1.5, "nan": None, "arr": [0, 1, 2], "t": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_save_metrics_goes_to_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "run"))
    runs.save_metrics({"acc": 0.5})
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == {"metrics": {"acc": 0.5}, "headlines": [],
                                                                          "timings": {}}
    with pytest.raises(TypeError, match="mapping"):
        runs.save_metrics([1, 2])


def test_provenance_fields():
    info = runs.provenance(device="cpu")
    for key in ("git_commit", "git_dirty", "versions", "device", "threads"):
        assert key in info
    assert info["versions"]["torch"].startswith("2.13.0")
    assert info["device"] == "cpu"
    # the kind of CPU: its floats differ from another kind's (an AVX512 EPYC vs the published runs' machine)
    assert info["cpu"] == runs.cpu_model() and info["cpu"]
    if Path("/proc/cpuinfo").exists() and " avx2 " in Path("/proc/cpuinfo").read_text():
        assert info["cpu"].endswith(("avx2", "avx512f"))


def test_names_that_become_paths_are_plain():
    for ok in ("cpu", "gpu_2", "20261204-010203-cpu-seed0-ab12", "v1.2"):
        assert runs.check_name(ok, what="run id") == ok
    for bad in ("../x", "a/b", "..", ".", ".hidden", "", "a b", "x\\y", "é"):
        with pytest.raises(ValueError, match="run id"):
            runs.check_name(bad, what="run id")


def test_git_dirty_ignores_the_reports_folder(tmp_path):
    """Publishing rewrites tracked files under reports/; that alone must not mark later runs dirty."""
    import subprocess

    from epi_utils.workbench.runs import git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "page.html").write_text("old")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "reports" / "page.html").write_text("new")
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["git_dirty"] is True


def test_git_dirty_counts_untracked_files(tmp_path):
    """A run of a notebook that was never committed must not say its tree was clean (issue 31)."""
    import subprocess

    from epi_utils.workbench.runs import git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("scratch/\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "ignored.txt").write_text("ignored by git")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "run.json").write_text("{}")  # outputs never dirty a tree
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "99_new.ipynb").write_text("{}")
    assert git_state(tmp_path)["git_dirty"] is True


def test_data_dir_without_the_variable_follows_the_makefile(tmp_path, monkeypatch):
    """``../shared/data`` beside the repository when it exists, else ``<repo>/data`` (issue 31: the
    README's commands must work outside make)."""
    monkeypatch.delenv(runs.DATA_DIR_ENV, raising=False)
    repo = tmp_path / "project"
    repo.mkdir()
    assert runs.data_dir(repo) == repo / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert runs.data_dir(repo) == (tmp_path / "shared" / "data").resolve()
    assert runs.data_dir_candidates(repo) == [tmp_path / "shared" / "data", repo / "data"]
    monkeypatch.setenv(runs.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert runs.data_dir(repo) == (tmp_path / "elsewhere").resolve()


def test_record_data_file_hashes_into_the_run_folder(tmp_path, monkeypatch):
    import hashlib

    data = tmp_path / "data" / "set" / "a.json"
    data.parent.mkdir(parents=True)
    data.write_text('{"a": 1}')
    monkeypatch.delenv(runs.RUN_DIR_ENV, raising=False)
    assert runs.record_data_file(data) is None  # outside a batch run: nothing hashed or written
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "run"))
    monkeypatch.setenv(runs.DATA_DIR_ENV, str(tmp_path / "data"))
    digest = hashlib.sha256(b'{"a": 1}').hexdigest()
    assert runs.record_data_file(data) == digest
    runs.record_data_file(data)  # read twice: listed once
    assert runs.read_data_files(tmp_path / "run") == {"$EPI_DATA_DIR/set/a.json": {"sha256": digest, "bytes": 8}}


def test_atomic_write_text_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    import errno

    page = runs.atomic_write_text(tmp_path / "index.html", "old page")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        runs.atomic_write_text(page, "new page")
    assert page.read_text() == "old page"
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]  # no temporary file left behind
