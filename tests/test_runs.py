"""Seeds, devices, atomic files, provenance."""
import json
import random

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
