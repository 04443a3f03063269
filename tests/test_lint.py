"""Static checks that run with the tests: ruff (imports sorted, relative imports banned, unused code
and likely bugs flagged), import-linter (the layer rules in pyproject.toml) and no import circle."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean():
    out = _run("ruff", "check", "--output-format", "concise", ".")
    assert out.returncode == 0, f"ruff found problems (fix with `.venv/bin/ruff check --fix .`):\n{out.stdout}{out.stderr}"


def test_layer_contracts_hold():
    out = _run("lint-imports", "--no-cache")
    assert out.returncode == 0, f"import-linter contracts broken:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"


def import_cycles(package: str = "epi_utils") -> list[list[str]]:
    """Strongly connected groups of modules (import circles, lazy imports included), each sorted."""
    import grimp

    graph = grimp.build_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm, recursive (the graph has ~100 modules)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_circle():
    cycles = import_cycles()
    assert not cycles, f"import circles (a module pair importing each other, lazily or not): {cycles}"
