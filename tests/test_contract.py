"""The study contract (epi_utils.workbench.contract), checked by signature on every study package,
and one source of defaults: each notebook's parameters cell is generated from its config."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import typing
from pathlib import Path

import nbformat
import pytest

from epi_utils import studies
from epi_utils.workbench import contract
from epi_utils.workbench.contract import ConfigError, StudyConfig, option, parameters_cell
from epi_utils.workbench.params import available_profiles, parameters_cell_source, resolve_parameters

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "epi_utils"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUDY_MODULES = ("config", "study", "summary", "figures", "rehearsal")
LAYOUT = {"__init__.py", "studies.py", "workbench", "data", "lm", "importance", "isolation",
          "drift", "isolation_study", "ilp", "events", "acd"}


# ------------------------------------------------------------------------------- the contract itself
@dataclasses.dataclass(frozen=True)
class _Toy(StudyConfig):
    steps: int = option(10, "optimizer steps", ge=1)
    lr: float = option(0.001, "learning rate", gt=0)
    mode: str = option("a", "a | b", choices=("a", "b"))
    ratios: tuple[float, ...] = option([0.1, 0.5], "isolation ratios", gt=0, le=1, nonempty=True, unique=True)
    names: list[str] = option(["x"], "names")

    def check(self):
        if self.mode == "b" and self.steps < 5:
            raise self.error("steps", "mode b needs at least 5 steps")


def test_option_declares_default_and_help_once_and_validation_has_one_format():
    cfg = _Toy()
    assert cfg.ratios == (0.1, 0.5) and cfg.names == ["x"] and cfg.lr == 0.001
    assert _Toy(lr=1).lr == 1.0 and isinstance(_Toy(lr=1).lr, float)  # an int for a float is normalised
    assert _Toy(ratios=[0.2]).ratios == (0.2,)                         # a list for a tuple field
    for kwargs, message in [({"steps": 0}, "_Toy.steps: must be >= 1 (got 0)"),
                            ({"steps": True}, "_Toy.steps: expected an integer (got True)"),
                            ({"steps": 10**23}, "_Toy.steps: integer out of range"),
                            ({"lr": float("nan")}, "_Toy.lr: expected a finite number"),
                            ({"mode": "c"}, "_Toy.mode: must be one of ['a', 'b'] (got 'c')"),
                            ({"mode": "a\udcff"}, "_Toy.mode: not valid UTF-8 text"),
                            ({"ratios": [1.5]}, "_Toy.ratios: must be <= 1 (got 1.5)"),
                            ({"ratios": []}, "_Toy.ratios: must not be empty"),
                            ({"ratios": [0.1, 0.1]}, "_Toy.ratios: must not repeat a value"),
                            ({"names": "x"}, "_Toy.names: expected a list of str"),
                            ({"device": "gpu"}, "_Toy.device: must be auto, cpu, cuda, cuda:N or mps"),
                            ({"mode": "b", "steps": 2}, "_Toy.steps: mode b needs at least 5 steps (got 2)")]:
        with pytest.raises(ConfigError) as info:
            _Toy(**kwargs)
        assert str(info.value).startswith(message), (kwargs, str(info.value))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3
    with pytest.raises(ConfigError, match="_Toy.stepz: unknown field"):
        cfg.replace(stepz=3)
    assert cfg.replace(steps=3).steps == 3 and cfg.steps == 10


def test_parameters_cell_is_generated_from_the_config():
    cell = parameters_cell(_Toy).splitlines()
    assert cell[0].startswith('profile: str = "cpu"  # ')
    assert cell[1:4] == [
        "seed: int = 0  # first seed of the run; a study with several seeds uses seed, seed + 1, ...",
        'device: str = "auto"  # auto | cpu | cuda (auto picks cuda when present)',
        "rehearse: bool = False  # run this profile's code path on CPU at toy scale and estimate the full-scale cost"]
    assert cell[4:] == ["steps: int = 10  # optimizer steps", "lr: float = 0.001  # learning rate",
                        'mode: str = "a"  # a | b', "ratios: list[float] = [0.1, 0.5]  # isolation ratios",
                        'names: list[str] = ["x"]  # names']
    with pytest.raises(ValueError, match="papermill"):
        option(1, "a = b")
    assert _Toy.from_parameters({"steps": 4, "unrelated": object()}).steps == 4


def test_sync_rewrites_only_the_parameters_cell(tmp_path):
    from conftest import write_notebook

    from epi_utils.workbench.params import parse_parameters, sync_parameters_cell

    nb = write_notebook(tmp_path, "97_toy", 'profile: str = "cpu"  # p\nseed: int = 0  # s\ndevice: str = "cpu"  # d\n',
                        ["print('kept')"])
    assert sync_parameters_cell(nb, parameters_cell(_Toy)) is True
    assert sync_parameters_cell(nb, parameters_cell(_Toy)) is False
    assert parse_parameters(nb)["steps"].default == 10
    assert "print('kept')" in nb.read_text()


# ---------------------------------------------------------------------------------- the layout
def test_layout_reads_as_the_architecture():
    present = {p.name for p in LIBRARY.iterdir() if p.name != "__pycache__"}
    assert present == LAYOUT, f"epi_utils/ holds {sorted(present ^ LAYOUT)} against the layout"
    for stem, package in studies.STUDIES.items():
        folder = LIBRARY / package.split(".")[-1]
        for module in STUDY_MODULES:
            assert (folder / f"{module}.py").is_file(), f"study {stem}: {module}.py missing in {folder.name}/"


def test_every_notebook_with_a_config_is_registered():
    for nb in NOTEBOOKS:
        assert studies.config_class(nb) is not None, f"{nb.name}: register its study or config in epi_utils.studies"


# ------------------------------------------------------------------------------- each study
@pytest.fixture(params=sorted(studies.STUDIES), ids=str)
def study(request):
    return request.param, studies.study_package(request.param)


def _contract_signature(fn, what):
    params = list(inspect.signature(fn).parameters.values())
    assert params and params[0].name == "cfg" and params[0].kind in (params[0].POSITIONAL_ONLY,
                                                                     params[0].POSITIONAL_OR_KEYWORD), \
        f"{what}: first parameter must be cfg"
    rest = params[1:]
    assert all(p.kind == p.KEYWORD_ONLY for p in rest), f"{what}: options after cfg are keyword-only"
    assert "progress" in {p.name for p in rest}, f"{what}: takes progress="
    assert all(p.default is not p.empty for p in rest), f"{what}: every option has a default (builds its own inputs)"


def test_study_follows_the_contract(study):
    stem, pkg = study
    cfg_cls = pkg.Config
    assert dataclasses.is_dataclass(cfg_cls) and issubclass(cfg_cls, StudyConfig), f"{stem}: Config subclasses StudyConfig"
    assert cfg_cls.__dataclass_params__.frozen, f"{stem}: Config is frozen"
    for f in dataclasses.fields(cfg_cls):
        assert f.metadata.get("help"), f"{stem}: {cfg_cls.__name__}.{f.name} needs option(default, help)"
    cfg_cls()  # the declared defaults (= the cpu profile) validate
    _contract_signature(pkg.run_study, f"{stem}.run_study")
    _contract_signature(pkg.rehearse, f"{stem}.rehearse")
    result_cls = pkg.Result
    for method in ("frames", "metrics", "headlines", "timings"):
        assert callable(getattr(result_cls, method, None)), f"{stem}: Result.{method}() missing"
    hints = typing.get_type_hints(pkg.run_study)
    assert hints.get("return") in (result_cls, contract.StudyResult), f"{stem}: run_study is annotated -> Result"


def test_figures_return_figures_and_never_save(study):
    stem, pkg = study
    figures = importlib.import_module(f"{pkg.__name__}.figures")
    source = Path(figures.__file__).read_text()
    for banned in ("save_figure", "savefig", "plt.show"):
        assert banned not in source, f"{stem}: figures.py calls {banned}; return the figure, the notebook saves it"


def test_every_field_error_names_config_field_and_value(study):
    stem, pkg = study
    cfg_cls = pkg.Config
    for f in dataclasses.fields(cfg_cls):
        kind, _ = contract._type_of(cfg_cls, f.name)
        bad = {"int": "three", "float": "x", "str": 3, "bool": "yes", "list": 5}[kind]
        with pytest.raises(ConfigError, match=rf"^{cfg_cls.__name__}\.{f.name}: "):
            cfg_cls(**{f.name: bad})


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_equals_the_config(nb_path):
    """One source of defaults: ``epi params NOTEBOOK --sync`` regenerates the cell after a config change."""
    cfg_cls = studies.config_class(nb_path)
    assert parameters_cell_source(nb_path).strip() == parameters_cell(cfg_cls), \
        f"{nb_path.name}: parameters cell differs from {cfg_cls.__name__}; run `epi params {nb_path} --sync`"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_profile_builds_a_valid_config(nb_path):
    cfg_cls = studies.config_class(nb_path)
    for profile in available_profiles(nb_path):
        values = resolve_parameters(nb_path, profile=profile)
        cfg_cls.from_parameters(values)  # raises ConfigError naming the field


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_are_straight_runbooks(nb_path):
    """No control flow at the top level of a cell: decisions live in the library, where they are tested."""
    nb = nbformat.read(nb_path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        for node in ast.parse(cell.source).body:
            assert not isinstance(node, (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.FunctionDef,
                                         ast.ClassDef, ast.AsyncFor, ast.AsyncWith)), \
                f"{nb_path.name} cell {i}: top-level {type(node).__name__} (line {node.lineno}); move it into the library"
