"""The README's ``epi`` commands work as printed (issue 31): each one parses, and names notebooks,
profiles and parameters that exist, from the repository root and without ``EPI_DATA_DIR`` (as a user
types them outside ``make``). Nothing is executed: the runs themselves are covered elsewhere."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from conftest import REPO

from epi_utils.workbench import cli, runs
from epi_utils.workbench.params import available_profiles, resolve_parameters


def readme_commands() -> list[list[str]]:
    """Every ``.venv/bin/epi ...`` line of README.md (continuation lines joined, comments dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    return [shlex.split(line.strip(), comments=True)[1:] for line in text.splitlines()
            if line.strip().startswith(".venv/bin/epi ")]


COMMANDS = readme_commands()


def test_the_readme_prints_epi_commands():
    assert len(COMMANDS) >= 5 and {argv[0] for argv in COMMANDS} >= {"run", "sweep", "params", "report"}


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv)[:80])
def test_a_readme_command_works_as_printed(argv, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv(runs.DATA_DIR_ENV, raising=False)
    args = cli._parser().parse_args(argv)
    for notebook in ([args.notebook] if isinstance(getattr(args, "notebook", None), Path)
                     else getattr(args, "notebook", None) or []):
        assert notebook.is_file(), f"README names {notebook}, which does not exist"
    if args.command in ("run", "sweep"):
        assert args.profile in available_profiles(args.notebook)
        for name, raw in args.param:  # every value a sweep lists, one at a time
            for value in (cli._split_values(raw) if args.command == "sweep" else [raw]):
                resolve_parameters(args.notebook, profile=args.profile, overrides={name: value})


def test_without_the_variable_data_is_found_as_the_makefile_finds_it(monkeypatch):
    monkeypatch.delenv(runs.DATA_DIR_ENV, raising=False)
    shared = REPO.parent / "shared" / "data"
    assert runs.data_dir() == (shared.resolve() if shared.is_dir() else REPO / "data")
