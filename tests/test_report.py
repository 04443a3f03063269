"""The runner: parameter validation, failed and killed runs, the index, sweeps, publishing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_notebook

from epi_utils.workbench import cli
from epi_utils.workbench.params import NotebookConventionError, ParameterError, parse_parameters, resolve_parameters
from epi_utils.workbench.report import collect_runs, publish, run_notebook, write_index
from epi_utils.workbench.sweep import expand_grid, sweep

PROVENANCE = ("study", "profile", "parameters", "seed", "git_commit", "git_dirty", "versions", "device",
              "threads", "started_at", "wall_time_s", "status", "metrics")


def test_parameters_are_parsed_with_types_and_comments(toy_notebook):
    specs = parse_parameters(toy_notebook)
    assert list(specs) == ["profile", "seed", "device", "scale", "fail", "sleep_s"]
    assert specs["scale"].type_name == "float" and specs["scale"].default == 10.0
    assert specs["fail"].comment == "raise on purpose"


def test_unknown_parameter_rejected_with_valid_names(toy_notebook, tmp_path, capsys):
    with pytest.raises(ParameterError) as err:
        resolve_parameters(toy_notebook, profile="smoke", overrides={"scael": "2"})
    assert "scael" in str(err.value) and "valid names: profile, seed, device, scale, fail, sleep_s" in str(err.value)
    code = cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", "scael", "2", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "valid names" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # rejected before anything ran


def test_wrong_type_and_missing_profile_rejected(toy_notebook):
    with pytest.raises(ParameterError, match="'seed'.*expected int"):
        resolve_parameters(toy_notebook, profile="smoke", overrides={"seed": "zero"})
    with pytest.raises(ParameterError, match="'fail'.*expected bool"):
        resolve_parameters(toy_notebook, profile="smoke", overrides={"fail": "maybe"})
    with pytest.raises(ParameterError, match="available profiles: cpu, smoke"):
        resolve_parameters(toy_notebook, profile="huge")
    assert resolve_parameters(toy_notebook, profile="smoke", overrides={"scale": "2.5", "fail": "false"}) == {
        "seed": 0, "scale": 2.5, "fail": False, "profile": "smoke"}


def test_unknown_name_in_profile_file_rejected(tmp_path):
    nb = write_notebook(tmp_path, "98_bad", 'profile: str = "cpu"  # p\nseed: int = 0  # s\ndevice: str = "cpu"  # d',
                        ["pass"], profiles={"smoke": "seed: 1\nlr: 0.1\n"})
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['lr'\] \(profile smoke\)"):
        resolve_parameters(nb, profile="smoke")


@pytest.mark.parametrize("source, message", [
    ("profile: str = 'cpu'  # p\nseed: int = 0  # s\ndevice: str = 'cpu'  # d\nb: int = seed * 2  # derived", "literal"),
    ("profile: str = 'cpu'  # p\nseed: int = 0\ndevice: str = 'cpu'  # d", "comment"),
    ("profile: str = 'cpu'  # p\ndevice: str = 'cpu'  # d", "missing \\['seed'\\]"),
    ("profile: str = 'cpu'  # p\nseed: int = 0  # s\ndevice: str = 'cpu'  # d\nimport os", "only 'name: type"),
    ("profile: str = 'cpu'  # p\nseed: int = 'zero'  # s\ndevice: str = 'cpu'  # d", "expected int"),
])
def test_parameters_cell_conventions_enforced(tmp_path, source, message):
    nb = write_notebook(tmp_path, "97_conv", source, ["pass"])
    with pytest.raises(NotebookConventionError if "expected" not in message else ParameterError, match=message):
        parse_parameters(nb)


def test_successful_run_has_provenance_report_and_figures(toy_notebook, tmp_path):
    run_dir = run_notebook(toy_notebook, profile="smoke", overrides={"seed": 3}, reports_dir=tmp_path / "r",
                           progress=False)
    record = json.loads((run_dir / "metrics.json").read_text())
    for key in PROVENANCE:
        assert key in record, key
    assert record["status"] == "success"
    assert record["metrics"]["value"] == 30.0 and record["seed"] == 3
    assert (run_dir / "figures" / "line.png").exists() and (run_dir / "figures" / "line.pdf").exists()
    html = (run_dir / "report.html").read_text()
    assert "status <b" in html and "success" in html
    assert "runs.save_metrics" not in html  # code cells are hidden in the report
    index = (tmp_path / "r" / "index.html").read_text()
    assert "99_toy" in index and "report.html" in index and "metrics.json" in index


def test_failing_notebook_gives_failed_run_in_index(toy_notebook, tmp_path, capsys):
    code = cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", "fail", "true", "--out", str(tmp_path / "r")])
    assert code == 1
    (run,) = collect_runs(tmp_path / "r")
    record = json.loads((run.path / "metrics.json").read_text())
    assert record["status"] == "failed" and "planted failure" in record["error"]["message"]
    assert "metrics" in record and record["metrics"] == {}
    assert (run.path / "notebook.ipynb").exists()  # the partially executed notebook is kept
    index = (tmp_path / "r" / "index.html").read_text()
    assert "class='failed'" in index and "planted failure" in index


def test_killed_run_never_claims_success(toy_notebook, tmp_path):
    reports = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "epi_utils.workbench.cli", "run", str(toy_notebook), "--profile", "smoke",
                             "-p", "sleep_s", "60", "--out", str(reports)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    metrics = None
    while time.time() < deadline:
        found = list(reports.glob("99_toy/*/metrics.json"))
        if found and list(reports.glob("99_toy/*/notebook.ipynb")):
            metrics = found[0]
            break
        time.sleep(0.5)
    assert metrics is not None, "the run never started"
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, mid-way
    proc.wait(timeout=30)
    record = json.loads(metrics.read_text())
    assert record["status"] != "success"
    (run,) = collect_runs(reports)
    assert run.status == "interrupted"
    assert "interrupted" in write_index(reports).read_text()


def test_sweep_over_two_seeds_aggregates_both(toy_notebook, tmp_path, capsys):
    assert expand_grid({"seed": [0, 1], "scale": [1, 2]}) == [
        {"seed": 0, "scale": 1}, {"seed": 0, "scale": 2}, {"seed": 1, "scale": 1}, {"seed": 1, "scale": 2}]
    out = sweep(toy_notebook, grid={"seed": ["0", "2"]}, profile="smoke", jobs=2, reports_dir=tmp_path / "r")
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    value = summary[summary.metric == "value"].iloc[0]
    assert value["n_seeds"] == 2
    assert value["mean"] == pytest.approx(10.0)  # seeds 0 and 2, scale 10 -> 0 and 20
    # t-interval over 2 seeds of {0, 20}: mean 10, sd 14.1421, t_{0.975,1} = 12.7062 -> 10 -+ 127.062
    assert value["ci_low"] == pytest.approx(-117.062, abs=1e-3) and value["ci_high"] == pytest.approx(137.062, abs=1e-3)
    assert "nested.half" in set(summary.metric) and "nested.half_ci95" not in set(summary.metric)
    assert (out / "summary.html").exists()
    assert len(collect_runs(tmp_path / "r")) == 2
    said = [ln for ln in capsys.readouterr().err.splitlines() if "points done" in ln]
    assert [ln.split(": ")[1].split(" points")[0] for ln in said] == ["1/2", "2/2"]


def test_publish_copies_newest_successful_run(toy_notebook, tmp_path):
    reports = tmp_path / "r"
    run_notebook(toy_notebook, profile="cpu", overrides={"seed": 1}, reports_dir=reports, progress=False)
    time.sleep(1.1)
    newest = run_notebook(toy_notebook, profile="cpu", overrides={"seed": 2}, reports_dir=reports, progress=False)
    run_notebook(toy_notebook, profile="cpu", overrides={"fail": True}, reports_dir=reports, progress=False)
    target = publish(reports, profile="cpu")
    published = json.loads((target / "99_toy" / "metrics.json").read_text())
    assert published["run_id"] == newest.name and published["metrics"]["value"] == 20.0
    html = (target / "99_toy" / "report.html").read_text()
    assert "data:image/png;base64" in html or "<img" not in html
    assert (published["git_commit"] or "unknown")[:12] in (target / "index.html").read_text()
    with pytest.raises(FileNotFoundError, match="no successful 'gpu' run"):
        publish(reports, profile="gpu")
    other = run_notebook(toy_notebook, profile="smoke", reports_dir=reports, progress=False)
    side = publish(reports, profile="smoke")  # other profiles go beside the cpu pages, never over them
    assert side == target / "smoke" and json.loads((side / "99_toy" / "metrics.json").read_text())["run_id"] == other.name
    assert json.loads((target / "99_toy" / "metrics.json").read_text())["run_id"] == newest.name
