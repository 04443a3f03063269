"""Every cross-reference resolves: file paths and ``epi_utils`` names cited in code, docs and README.

A comment that points nowhere (a design note that is not in the repository, a module that moved) is a
defect a reader pays for; this test finds them."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted({*REPO.glob("epi_utils/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py"),
                  *REPO.glob("scripts/*"), *REPO.glob("docs/*.md"), REPO / "README.md", REPO / "Makefile",
                  REPO / "pyproject.toml", REPO / "requirements.txt", REPO / ".ci" / "run"})
PATH_RE = re.compile(r"(?<![\w/.-])((?:docs|epi_utils|tests|notebooks|benchmarks|scripts)/[\w./()-]*\w)")
NAME_RE = re.compile(r"(?<![\w.])(epi_utils(?:\.[A-Za-z_]\w*)+)")
SKIP = re.compile(r"[<>{}*]")
#: paths that exist only at run time: Lab copies written by `epi lab-params` (git-ignored) and the toy
#: notebooks tests write into their temporary folders
GENERATED = ("notebooks/lab", "notebooks/99_toy.ipynb")


def _resolve_name(dotted: str) -> bool:
    """True when ``dotted`` is a module, or a module followed by attributes that exist."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _references(pattern: re.Pattern) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        if not path.is_file() or path.name == "test_references.py":
            continue
        for m in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            ref = m.group(1).rstrip(".")
            if not SKIP.search(ref) and not ref.startswith(GENERATED):
                found.setdefault(ref, set()).add(str(path.relative_to(REPO)))
    return found


def test_cited_files_exist():
    missing = {ref: sorted(where) for ref, where in _references(PATH_RE).items()
               if not (REPO / ref).exists() and not any((REPO / ref).parent.glob(Path(ref).name + "*"))}
    assert not missing, f"paths cited but not in the repository: {missing}"


def test_cited_epi_utils_names_resolve():
    broken = {ref: sorted(where) for ref, where in _references(NAME_RE).items() if not _resolve_name(ref)}
    assert not broken, f"epi_utils names cited that do not resolve: {broken}"


def test_no_reference_to_design_notes_outside_the_repository():
    for path in SOURCES:
        if path.is_file() and path.name != "test_references.py":
            assert "DESIGN.md" not in path.read_text(encoding="utf-8", errors="replace"), \
                f"{path.relative_to(REPO)} cites DESIGN.md, which a clone does not have: cite docs/architecture.md"


@pytest.mark.parametrize("dotted,ok", [("epi_utils.workbench.stats.compare", True),
                                       ("epi_utils.workbench.stats.nope", False),
                                       ("epi_utils.epi.continual", False)])
def test_name_resolver_by_hand(dotted, ok):
    assert _resolve_name(dotted) is ok
