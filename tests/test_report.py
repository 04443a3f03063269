"""The runner: parameter validation, failed and killed runs, the index, sweeps, publishing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TOY_CELLS, TOY_PARAMS, write_notebook

from epi_utils.workbench import cli
from epi_utils.workbench.params import NotebookConventionError, ParameterError, parse_parameters, resolve_parameters
from epi_utils.workbench.report import collect_runs, publish, run_notebook, write_index
from epi_utils.workbench.sweep import expand_grid

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


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """One reports folder of toy runs, made once for the module's runner and publish checks (each
    run is a kernel start, ~1.2 s of CPU, issue 34): cpu seeds 1 and 2 a second apart, a cpu run
    failing on purpose through ``epi run`` (its exit code), then a smoke run of seed 3."""
    base = tmp_path_factory.mktemp("toy_runs")
    nb = write_notebook(base / "notebooks", "99_toy", TOY_PARAMS, TOY_CELLS)
    reports = base / "r"
    run_notebook(nb, profile="cpu", overrides={"seed": 1}, reports_dir=reports, progress=False)
    time.sleep(1.1)
    newest = run_notebook(nb, profile="cpu", overrides={"seed": 2}, reports_dir=reports, progress=False)
    code = cli.main(["run", str(nb), "--profile", "cpu", "-p", "fail", "true", "--out", str(reports)])
    after_fail = collect_runs(reports)
    smoke = run_notebook(nb, profile="smoke", overrides={"seed": 3}, reports_dir=reports, progress=False)
    return {"reports": reports, "newest_cpu": newest, "failed_code": code, "after_fail": after_fail,
            "smoke": smoke}


def test_successful_run_has_provenance_report_and_figures(toy_runs):
    run_dir = toy_runs["smoke"]
    record = json.loads((run_dir / "metrics.json").read_text())
    for key in PROVENANCE:
        assert key in record, key
    assert record["status"] == "success"
    assert record["metrics"]["value"] == 30.0 and record["seed"] == 3
    assert (run_dir / "figures" / "line.png").exists() and (run_dir / "figures" / "line.pdf").exists()
    html = (run_dir / "report.html").read_text()
    assert "status <b" in html and "success" in html
    assert "runs.save_metrics" not in html  # code cells are hidden in the report
    index = (toy_runs["reports"] / "index.html").read_text()
    assert "99_toy" in index and "report.html" in index and "metrics.json" in index


def test_failing_notebook_gives_failed_run_in_index(toy_runs):
    assert toy_runs["failed_code"] == 1
    assert len(toy_runs["after_fail"]) == 3  # the two cpu runs and the failed one: one folder for it
    (run,) = [r for r in toy_runs["after_fail"] if r.status == "failed"]
    record = json.loads((run.path / "metrics.json").read_text())
    assert record["status"] == "failed" and "planted failure" in record["error"]["message"]
    assert "metrics" in record and record["metrics"] == {}
    assert (run.path / "notebook.ipynb").exists()  # the partially executed notebook is kept
    index = (toy_runs["reports"] / "index.html").read_text()
    assert "class='failed'" in index and "planted failure" in index


LEAN_RUNNER = """
import importlib.util, sys
from epi_utils.workbench import datasets, runs
runs.preflight({"seed": 0, "device": "cpu"})
runs.preflight({"device": "auto"})
info = runs.provenance(device="cpu")
hashes = {name: datasets.known_hashes(name) for name in datasets.DATASETS}
print(sorted(m for m in ("torch", "scipy", "epi_utils.acd", "epi_utils.events") if m in sys.modules))
assert info["threads"] == 1 and info["device"] == "cpu", info  # torch says 1 with OMP_NUM_THREADS=1
for name, entry in datasets.DATASETS.items():  # each table as its module holds it once it has run
    if entry.hashes:
        module, attr = entry.hashes.split(":")
        package, _, leaf = module.rpartition(".")
        where = next(iter(importlib.util.find_spec(package).submodule_search_locations))
        spec = importlib.util.spec_from_file_location("alone_" + leaf, f"{where}/{leaf}.py")
        alone = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(alone)
        table = getattr(alone, attr)
        assert hashes[name] == {f"{entry.hash_root}/{rel}": digest for rel, digest in table.items()}, name
assert sum(map(len, hashes.values())) > 0
"""


def test_a_runner_checks_a_cpu_run_and_its_data_hashes_without_torch_or_the_studies():
    """The checks and provenance every ``epi run`` and sweep worker makes for a cpu run, and the
    registry's known hashes, import neither torch nor the study packages (3-5 s of CPU in each such
    process, issue 34); the hashes are those the study modules define (each run alone, outside its package)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MKL_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", LEAN_RUNNER], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


def test_killed_run_never_claims_success(tmp_path):
    # the toy notebook without its figure: the kernel only sleeps until it is killed (no matplotlib, issue 34)
    sleeper = write_notebook(tmp_path / "notebooks", "99_toy", TOY_PARAMS,
                             ["import time\nfrom epi_utils.workbench import runs", TOY_CELLS[1], TOY_CELLS[3]])
    reports = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "epi_utils.workbench.cli", "run", str(sleeper), "--profile", "smoke",
                             "-p", "sleep_s", "600", "--out", str(reports)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # bounds a hang only: a kernel starts slowly on a loaded machine
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
    proc.wait(timeout=120)
    record = json.loads(metrics.read_text())
    assert record["status"] != "success"
    (run,) = collect_runs(reports)
    assert run.status == "interrupted"
    assert "interrupted" in write_index(reports).read_text()


def test_sweep_grid_expands_in_order():
    """The grid's points; a sweep's summary over two seeds: test_executors.py (its local sweep)."""
    assert expand_grid({"seed": [0, 1], "scale": [1, 2]}) == [
        {"seed": 0, "scale": 1}, {"seed": 0, "scale": 2}, {"seed": 1, "scale": 1}, {"seed": 1, "scale": 2}]


def test_publish_copies_newest_successful_run(toy_runs):
    """The newest successful cpu run is published (not the failed cpu run after it); other profiles
    go beside the cpu pages."""
    reports, newest, other = toy_runs["reports"], toy_runs["newest_cpu"], toy_runs["smoke"]
    target = publish(reports, profile="cpu")
    published = json.loads((target / "99_toy" / "metrics.json").read_text())
    assert published["run_id"] == newest.name and published["metrics"]["value"] == 20.0
    html = (target / "99_toy" / "report.html").read_text()
    assert "data:image/png;base64" in html or "<img" not in html
    assert (published["git_commit"] or "unknown")[:12] in (target / "index.html").read_text()
    with pytest.raises(FileNotFoundError, match="no successful 'gpu' run"):
        publish(reports, profile="gpu")
    side = publish(reports, profile="smoke")  # other profiles go beside the cpu pages, never over them
    assert side == target / "smoke" and json.loads((side / "99_toy" / "metrics.json").read_text())["run_id"] == other.name
    assert json.loads((target / "99_toy" / "metrics.json").read_text())["run_id"] == newest.name


# ------------------------------------------------------------------ issue 31: runs record everything
RECORD_PARAMS = 'profile: str = "cpu"  # profile\nseed: int = 0  # seed\ndevice: str = "cpu"  # device\nscale: float = 10.0  # scale'
RECORD_CELLS = [
    "from epi_utils.workbench import datasets, runs",
    "toy = datasets.require_folder('toyset')\nfew = datasets.require_dataset('fewasp', files=('separate.json',))",
    "runs.save_metrics({'value': seed * scale})",
]


def test_metrics_record_every_effective_parameter_the_seed_and_each_data_file(tmp_path, monkeypatch):
    """The profile sets no seed and the notebook's default of ``scale`` was edited: metrics.json still
    holds every value the run used, and the SHA-256 of each data file it read, a modified copy of a
    file with a known hash marked ``corrupt`` (issue 31: such a run used to record only the profile)."""
    import hashlib

    nb = write_notebook(tmp_path / "notebooks", "96_record", RECORD_PARAMS.replace("10.0", "4.0"), RECORD_CELLS,
                        profiles={"smoke": "device: cpu\n"})
    data = tmp_path / "data"
    (data / "toyset").mkdir(parents=True)
    (data / "toyset" / "a.txt").write_text("alpha")
    (data / "fewasp").mkdir()
    (data / "fewasp" / "separate.json").write_text('{"train": [], "validation": [], "test": []}')  # valid, modified
    monkeypatch.setenv("EPI_DATA_DIR", str(data))
    run_dir = run_notebook(nb, profile="smoke", overrides={"scale": "2"}, reports_dir=tmp_path / "r", progress=False)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "success", record.get("error")
    assert record["parameters"] == {"profile": "smoke", "seed": 0, "device": "cpu", "scale": 2.0}
    assert record["parameters_given"] == {"device": "cpu", "scale": 2.0, "profile": "smoke"}
    assert record["seed"] == 0
    files = record["data_files"]
    assert files["$EPI_DATA_DIR/toyset/a.txt"] == {"sha256": hashlib.sha256(b"alpha").hexdigest(), "bytes": 5,
                                                   "state": "unknown hash"}
    assert files["$EPI_DATA_DIR/fewasp/separate.json"]["state"] == "corrupt"
    assert set(files) == {"$EPI_DATA_DIR/toyset/a.txt", "$EPI_DATA_DIR/fewasp/separate.json"}
    assert not (run_dir / "data_files.jsonl").exists()  # merged into metrics.json
    assert "1 file(s) read differ from their known SHA-256" in (run_dir / "report.html").read_text()


def test_a_kernel_that_dies_before_its_first_reply_is_started_again(toy_notebook, tmp_path, monkeypatch):
    """The race of kernels started side by side (ports chosen, then bound later) kills a kernel before
    its first reply; the runner starts a new one with fresh ports instead of failing the run."""
    from jupyter_client.manager import AsyncKernelManager

    original = AsyncKernelManager._async_start_kernel
    started = []

    async def first_start_dies(self, **kw):
        await original(self, **kw)
        started.append((self.connection_file, self.shell_port))
        if len(started) == 1:
            self.provisioner.process.kill()
            self.provisioner.process.wait()

    monkeypatch.setattr(AsyncKernelManager, "_async_start_kernel", first_start_dies)
    run_dir = run_notebook(toy_notebook, profile="smoke", overrides={"seed": 2}, reports_dir=tmp_path / "r",
                           progress=False)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "success", record.get("error")
    assert record["metrics"]["value"] == 20.0 and record["kernel_starts"] == 2
    assert len(started) == 2 and started[0][0] != started[1][0]  # a new connection file: fresh ports
    assert "kernel start 1 of 3 failed (Kernel died before replying to kernel_info)" in (run_dir / "kernel.log").read_text()


def test_a_kernel_that_never_replies_fails_the_run_after_bounded_retries(toy_notebook, tmp_path, monkeypatch):
    from jupyter_client.manager import AsyncKernelManager

    from epi_utils.workbench import report

    original = AsyncKernelManager._async_start_kernel
    started = []

    async def always_dies(self, **kw):
        await original(self, **kw)
        started.append(self.connection_file)
        self.provisioner.process.kill()
        self.provisioner.process.wait()

    monkeypatch.setattr(AsyncKernelManager, "_async_start_kernel", always_dies)
    run_dir = run_notebook(toy_notebook, profile="smoke", reports_dir=tmp_path / "r", progress=False)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "Kernel died before replying" in record["error"]["message"]
    assert len(started) == report.KERNEL_START_ATTEMPTS == record["kernel_starts"]


def _register_toy_config(tmp_path, monkeypatch):
    """A study config for the toy notebook, registered as the runner's map would register a study's."""
    from epi_utils import studies

    (tmp_path / "toy_config_31.py").write_text(
        "import dataclasses\n"
        "from epi_utils.workbench.contract import StudyConfig, option\n\n\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class ToyConfig(StudyConfig):\n"
        "    scale: float = option(10.0, 'multiplier of the seed', gt=0)\n"
        "    fail: bool = option(False, 'raise on purpose')\n"
        "    sleep_s: float = option(0.0, 'seconds to sleep before finishing', ge=0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(studies.CONFIGS, "99_toy", "toy_config_31:ToyConfig")


@pytest.fixture
def no_kernel(monkeypatch):
    import papermill

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was started for input the config refuses")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


@pytest.mark.parametrize("value, message", [("0", "ToyConfig.scale: must be > 0 (got 0.0)"),
                                            ("nan", "ToyConfig.scale: expected a finite number (got nan)")])
def test_the_study_config_refuses_values_before_a_kernel_starts(toy_notebook, tmp_path, monkeypatch, capsys,
                                                                no_kernel, value, message):
    _register_toy_config(tmp_path, monkeypatch)
    reports = tmp_path / "r"
    assert cli.main(["run", str(toy_notebook), "--profile", "smoke", "-p", "scale", value, "--out", str(reports)]) == 2
    assert message in capsys.readouterr().err
    assert cli.main(["sweep", str(toy_notebook), "--profile", "smoke", "-p", "seed", "0,1", "-p", "scale", f"1,{value}",
                     "--out", str(reports)]) == 2
    assert message in capsys.readouterr().err
    assert not reports.exists()


def test_notebook_00_is_checked_by_its_config_before_a_kernel_starts(tmp_path, capsys, no_kernel):
    from conftest import REPO

    nb = REPO / "notebooks" / "00_environment.ipynb"
    assert cli.main(["run", str(nb), "--profile", "smoke", "-p", "matmul_size", "0", "--out", str(tmp_path / "r")]) == 2
    assert "EnvironmentConfig.matmul_size: must be >= 1 (got 0)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_lab_params_writes_an_ignored_copy_with_the_profile_values(toy_notebook, tmp_path, capsys):
    import nbformat

    before = toy_notebook.read_bytes()
    assert cli.main(["lab-params", str(toy_notebook), "--profile", "smoke", "-p", "scale", "3"]) == 0
    copy = toy_notebook.parent / "lab" / "99_toy.smoke.ipynb"
    assert str(copy) in capsys.readouterr().out
    assert toy_notebook.read_bytes() == before  # the committed notebook is not touched
    nb = nbformat.read(copy, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert tags[0] == ["parameters"] and tags[1] == ["injected-parameters"]
    injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])][0]
    assert "scale = 3.0" in injected and 'profile = "smoke"' in injected and "seed = 0" in injected
    assert "*" in (copy.parent / ".gitignore").read_text().split()
    assert cli.main(["lab-params", str(toy_notebook), "--profile", "smoke", "-p", "scale", "x"]) == 2  # validated


def test_a_parameters_cell_edited_as_papermill_accepts_is_read(tmp_path, capsys):
    """``n_seeds = 2`` typed in JupyterLab (no annotation, no comment): papermill reads it, so do we."""
    src = ('profile: str = "cpu"  # profile\nseed = 3\ndevice: str = "cpu"  # device\nn_seeds = 2  # seeds\n'
           'lr = 0.5\nname = "x"\nflag = True\nsizes = [1, 2]')
    nb = write_notebook(tmp_path / "notebooks", "95_lab", src, ["pass"])
    specs = parse_parameters(nb)
    assert {n: (s.type_name, s.default) for n, s in specs.items()} == {
        "profile": ("str", "cpu"), "seed": ("int", 3), "device": ("str", "cpu"), "n_seeds": ("int", 2),
        "lr": ("float", 0.5), "name": ("str", "x"), "flag": ("bool", True), "sizes": ("list", [1, 2])}
    assert resolve_parameters(nb, profile="smoke", overrides={"n_seeds": "4", "sizes": "3,4"})["sizes"] == [3, 4]
    assert cli.main(["params", str(nb)]) == 0
    assert "n_seeds: int = 2" in capsys.readouterr().out


def test_epi_params_tells_a_cell_edited_in_lab_from_the_committed_one(tmp_path, capsys):
    """Lab's autosave writes an edited value into the notebook; ``epi params`` names each value that
    differs from the study's config, and how to see and undo the edit."""
    import nbformat
    from conftest import REPO

    nb = nbformat.read(REPO / "notebooks" / "00_environment.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.source = "\n".join("matmul_size = 64" if line.startswith("matmul_size") else line
                            for line in cell.source.splitlines())
    edited = tmp_path / "00_environment.ipynb"
    nbformat.write(nb, edited)
    assert cli.main(["params", str(edited)]) == 0
    out = capsys.readouterr().out
    assert "matmul_size: int = 64" in out and "<- edited here; the study's default is 512" in out
    assert f"`git diff {edited}`" in out and "--sync" in out
    assert cli.main(["params", str(REPO / "notebooks" / "00_environment.ipynb")]) == 0
    assert "edited" not in capsys.readouterr().out


def test_headline_intervals_read_both_namings():
    """The index shows an interval for a headline stored as ``<m>_ci95`` or as ``<m>_low``/``<m>_high``."""
    from epi_utils.workbench.index_page import _intervals

    metrics = {"a": {"acc": 0.5, "acc_ci95": [0.4, 0.6]}, "f1": 0.7, "f1_low": 0.65, "f1_high": 0.75, "x_low": 1}
    assert _intervals(metrics) == {"a.acc": (0.4, 0.6), "f1": (0.65, 0.75)}
