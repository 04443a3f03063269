"""Bad input to the runner is refused before a kernel starts; Ctrl-C marks runs at once (issue 12)."""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TOY_PARAMS, write_notebook

from epi_utils.workbench import cli, runs
from epi_utils.workbench.report import collect_runs


def _no_runs(reports: Path, outside: Path) -> None:
    assert not list(reports.rglob("metrics.json")), "a run was started"
    assert not list(outside.rglob("metrics.json")), "a run was written outside reports/"


@pytest.mark.parametrize("run_id", ["../../../x", "a/b", "..", ".hidden", "x y", "ok;rm"])
def test_run_id_outside_reports_is_refused(toy_notebook, tmp_path, capsys, run_id):
    reports = tmp_path / "deep" / "er" / "r"
    code = cli.main(["run", str(toy_notebook), "--profile", "smoke", "--out", str(reports), "--run-id", run_id])
    assert code == 2
    assert "run id" in capsys.readouterr().err
    _no_runs(reports, tmp_path)


def test_profile_must_be_a_plain_name(toy_notebook, tmp_path, capsys):
    code = cli.main(["run", str(toy_notebook), "--profile", "../smoke", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "profile '../smoke' is not allowed" in capsys.readouterr().err
    _no_runs(tmp_path / "r", tmp_path)


def test_profile_given_as_parameter_is_refused(toy_notebook, tmp_path, capsys):
    code = cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", "profile", "gpu", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "--profile" in capsys.readouterr().err
    code = cli.main(["sweep", str(toy_notebook), "--profile", "smoke", "-p", "profile", "cpu,gpu",
                     "--out", str(tmp_path / "r")])
    assert code == 2
    _no_runs(tmp_path / "r", tmp_path)


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if anything tries to execute a notebook (refusals must come before a kernel).
    A check on the state of the world, not on the clock: a loaded machine cannot make it flake."""
    import papermill

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was started for input that should have been refused")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_and_negative_seed_fail_before_the_kernel(toy_notebook, tmp_path, capsys, no_kernel):
    assert cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", "device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", "seed", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "'seed' must be a non-negative integer" in capsys.readouterr().err
    assert cli.main(["sweep", str(toy_notebook), "--profile", "smoke", "-p", "seed", "0,-1", "--out", str(tmp_path / "r")]) == 2
    _no_runs(tmp_path / "r", tmp_path)


@pytest.mark.parametrize("name, value, message", [
    ("seed", str(10**23), "'seed'.*integer out of range"),
    ("seed", str(2**31), "'seed' must be below 2\\*\\*31"),
    ("device", "cpu\udcff", "'device'.*not valid UTF-8"),  # what Python makes of the byte 0xff in argv
])
def test_out_of_range_seed_and_non_utf8_text_are_refused_up_front(toy_notebook, tmp_path, capsys, no_kernel,
                                                                   name, value, message):
    import re

    assert cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", name, value, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    _no_runs(tmp_path / "r", tmp_path)


def test_a_binary_profile_is_refused_naming_the_file(toy_notebook, tmp_path, capsys, no_kernel):
    bad = toy_notebook.parent / "params" / "99_toy" / "blob.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe seed: 1")
    assert cli.main(["run", str(toy_notebook), "--profile", "blob", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a text file" in err and len(err.strip().splitlines()) == 1, err
    bad.write_bytes(b"seed: 1\x07\n")  # UTF-8, but a control character YAML refuses
    assert cli.main(["run", str(toy_notebook), "--profile", "blob", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid YAML" in err and len(err.strip().splitlines()) == 1, err


def test_disk_full_is_one_line(toy_notebook, tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "atomic_write_text", full)
    assert cli.main(["report", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["epi: error: no space left on the device; free some space, or write the runs "
                                        "elsewhere with --out DIR"], err


def _write_running(folder: Path, **runner) -> Path:
    folder.mkdir(parents=True)
    runs.atomic_write_json(folder / "metrics.json", {"study": "99_toy", "status": "running", "profile": "smoke",
                                                     "started_at": runs.utc_now(), **runner})
    return folder


def test_reused_pid_or_other_host_does_not_look_alive(tmp_path):
    me = runs.runner_identity()
    assert me["runner_host"] == platform.node() and me["runner_pid"] == os.getpid()
    if me["runner_start"] is None:
        pytest.skip("no /proc here: the start token cannot be read")
    reports = tmp_path / "r"
    _write_running(reports / "99_toy" / "alive", **me)
    # this process's PID, but a different start token: the PID was reused after the runner died
    _write_running(reports / "99_toy" / "reused", **{**me, "runner_start": me["runner_start"] + "0"})
    # this process's PID, recorded on another machine
    _write_running(reports / "99_toy" / "remote", **{**me, "runner_host": me["runner_host"] + "-elsewhere"})
    status = {r.run_id: r.status for r in collect_runs(reports)}
    assert status == {"alive": "running", "reused": "interrupted", "remote": "unknown"}


def _one_line(output: str) -> None:
    """The interrupt adds one line and no traceback (the run's own progress lines come before it)."""
    assert "Traceback" not in output, output[output.find("Traceback") - 300:]
    said = [ln for ln in output.replace("\r", "\n").splitlines() if "interrupted" in ln]
    assert len(said) == 1 and said[0].startswith("epi: interrupted"), output


TOY = [sys.executable, "-m", "epi_utils.workbench.cli"]
# The toy notebook without its figure: a run stopped while it sleeps needs no matplotlib in its kernel
# (pyplot is about 1.5 s of a kernel's CPU; four kernels here, issue 34)
SLEEPER_CELLS = ["import time", "time.sleep(sleep_s)", "from epi_utils.workbench import runs\n"
                 "runs.save_metrics({'value': seed * scale})"]


@pytest.fixture
def sleeper(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "notebooks", "99_toy", TOY_PARAMS, SLEEPER_CELLS)


def _terminal_signals() -> None:
    """In the child: SIGINT as a terminal has it. A test suite started in the background (``&``,
    nohup) inherits SIGINT ignored, and a runner that ignores SIGINT is stopped by SIGTERM instead."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(pattern: str, reports: Path, n: int = 1, timeout: float = 300) -> list[Path]:
    """Poll for files; the limit is generous (kernels start slowly on a loaded machine) and only
    bounds a hang: a passing run returns as soon as they appear."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(reports.glob(pattern))
        if len(found) >= n:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{pattern} never appeared {n} time(s) under {reports}")


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_a_stopped_run_is_marked_interrupted_at_once(sleeper, tmp_path, how):
    """Ctrl-C in the terminal reaches the runner and its kernel (the process group); ``kill PID`` (or
    a batch scheduler) sends SIGTERM to the runner alone, e.g. one started with ``&`` that ignores
    SIGINT. Either marks the run at once, with one line and no empty folder."""
    reports = tmp_path / "r"
    proc = subprocess.Popen([*TOY, "run", str(sleeper), "--profile", "smoke", "-p", "sleep_s", "600",
                             "--out", str(reports)], start_new_session=True, preexec_fn=_terminal_signals,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for("99_toy/*/notebook.ipynb", reports)
    time.sleep(2)
    if how == "ctrl_c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130
    _one_line(out + err)
    (metrics,) = reports.glob("99_toy/*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["status"] == "interrupted"  # on disk, not only in the index's reading
    assert "interrupted" in (reports / "index.html").read_text()
    assert not [p for p in metrics.parent.rglob("*") if p.is_dir() and not any(p.iterdir())]


def test_ctrl_c_in_a_parallel_sweep_marks_every_unfinished_run(sleeper, tmp_path):
    reports = tmp_path / "r"
    proc = subprocess.Popen([*TOY, "sweep", str(sleeper), "--profile", "smoke", "-p", "seed", "0,1,2",
                             "-p", "sleep_s", "600", "--jobs", "2", "--out", str(reports)],
                            start_new_session=True, preexec_fn=_terminal_signals,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for("99_toy/*/notebook.ipynb", reports, n=2)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130
    _one_line(out + err)
    folders = [p for p in (reports / "99_toy").iterdir() if p.is_dir() and p.name != "_sweeps"]
    assert len(folders) == 2  # the third run never started and left no folder
    for folder in folders:
        assert json.loads((folder / "metrics.json").read_text())["status"] == "interrupted"
        assert not [p for p in folder.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert (reports / "index.html").read_text().count("class='interrupted'") == 2


@pytest.mark.parametrize("jobs", ["-3", "0", "two"])
def test_sweep_jobs_must_be_at_least_one(toy_notebook, tmp_path, capsys, no_kernel, jobs):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sweep", str(toy_notebook), "--profile", "smoke", "-p", "seed", "0,1", "--jobs", jobs,
                  "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert "--jobs: expected a whole number of at least 1" in capsys.readouterr().err
    _no_runs(tmp_path / "r", tmp_path)
