"""Project conventions that must not drift: notebooks, profiles, requirements, CI."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import yaml

from epi_utils.workbench.params import REQUIRED_PARAMETERS, available_profiles, parse_parameters, resolve_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_FUNCTION_LINES = 5


def test_there_are_notebooks():
    assert (REPO / "notebooks" / "00_environment.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_and_profiles(nb_path):
    specs = parse_parameters(nb_path)  # raises on any convention break
    for name in REQUIRED_PARAMETERS:
        assert name in specs
    profiles = available_profiles(nb_path)
    assert {"smoke", "cpu"} <= set(profiles), f"{nb_path.stem} needs smoke and cpu profiles, has {profiles}"
    for profile in profiles:
        values = resolve_parameters(nb_path, profile=profile)
        raw = yaml.safe_load((nb_path.parent / "params" / nb_path.stem / f"{profile}.yaml").read_text())
        assert raw.get("profile", profile) == profile, f"{profile}.yaml sets profile={raw.get('profile')!r}"
        assert values["profile"] == profile


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_without_long_functions(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), f"{nb_path.name} cell {i} has outputs; clear them before committing"
        assert cell.get("execution_count") is None, f"{nb_path.name} cell {i} has an execution count"
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, (
                    f"{nb_path.name} cell {i}: {node.name} is {length} lines; logic belongs in epi_utils")


def _requirement_names(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_requirements_are_exact_pins_with_torch_beside_its_dependents():
    pins = _requirement_names((REPO / "requirements.txt").read_text())
    assert all(pins.values()), f"unpinned requirements: {[n for n, v in pins.items() if not v]}"
    assert pins["torch"] == "2.13.0"
    for dependent in ("transformers", "accelerate", "peft", "trl", "sentence-transformers"):
        assert dependent in pins, f"{dependent} depends on torch and must be pinned in requirements.txt"
    nodeps = _requirement_names((REPO / "requirements-nodeps.txt").read_text())
    assert "torch" not in nodeps and all(nodeps.values())


def test_environment_yml_wraps_requirements():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip_section == ["-r requirements.txt"], "environment.yml must install exactly requirements.txt"
    conda_pkgs = [d for d in deps if isinstance(d, str)]
    assert set(conda_pkgs) == {"python=3.11", "pip"}, "packages belong in requirements.txt, not environment.yml"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert "make test" in commands


def test_every_notebook_has_a_readme_row():
    readme = (REPO / "README.md").read_text()
    for nb in NOTEBOOKS:
        assert nb.name in readme, f"README does not mention {nb.name}"


# The layout, the study contract and one source of defaults: tests/test_contract.py; the layer rules:
# import-linter contracts in pyproject.toml (run by tests/test_lint.py).


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_profiles_hold_only_what_differs_and_cpu_is_the_default(nb_path):
    from epi_utils.workbench.params import profile_redundancies

    specs = parse_parameters(nb_path)
    assert specs["profile"].default == "cpu", f"{nb_path.name}: Run All must give the cpu profile"
    for profile in available_profiles(nb_path):
        repeated = profile_redundancies(nb_path, profile)
        assert not repeated, f"{nb_path.stem}/{profile}.yaml repeats the notebook's defaults for {repeated}"
    raw = yaml.safe_load((nb_path.parent / "params" / nb_path.stem / "cpu.yaml").read_text()) or {}
    assert set(raw) <= {"profile"}, f"{nb_path.stem}/cpu.yaml sets {sorted(set(raw) - {'profile'})}: put them in the defaults"


def test_profile_redundancy_is_detected(tmp_path):
    from conftest import TOY_PARAMS, write_notebook

    from epi_utils.workbench.params import profile_redundancies

    nb = write_notebook(tmp_path, "98_x", TOY_PARAMS, ["pass"], profiles={"cpu": "scale: 10.0\nseed: 1\n"})
    assert profile_redundancies(nb, "cpu") == ["scale"]
