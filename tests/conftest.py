"""Shared test set-up: data location and small notebook factories."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from epi_utils.workbench.params import skip_iri_format_checkers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

# Same rule as the Makefile: ../shared/data when present, unless EPI_DATA_DIR is set.
if "EPI_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["EPI_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("MPLBACKEND", "Agg")
# One intra-op thread for torch in tests and in the notebook kernels they start: the models are
# tiny, and on a 2-core machine that runs anything else, two threads per process oversubscribe
# the cores (measured here: a tiny-model SFT step 5-10x slower with 2 threads under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs 2 workers (pytest-xdist): one thread each, always
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before any test imports nbformat: jsonschema's iri checkers would build 38 Lark parsers (~3 s of CPU)
# in each test worker; nothing validates with format checkers (epi_utils.workbench.params).
skip_iri_format_checkers()


def write_notebook(folder: Path, stem: str, params_src: str, cells: list[str],
                   profiles: dict[str, str] | None = None) -> Path:
    """Write ``folder/<stem>.ipynb`` with a tagged parameters cell and code cells, plus profiles."""
    import nbformat as nbf

    nb = nbf.v4.new_notebook()
    p = nbf.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbf.v4.new_markdown_cell(f"# {stem}"), p] + [nbf.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.ipynb"
    nbf.write(nb, path)
    pdir = folder / "params" / stem
    pdir.mkdir(parents=True, exist_ok=True)
    for name, text in (profiles or {"smoke": "seed: 0\n", "cpu": "seed: 0\n"}).items():
        (pdir / f"{name}.yaml").write_text(text)
    return path


TOY_PARAMS = '''profile: str = "cpu"  # profile
seed: int = 0  # seed
device: str = "cpu"  # device
scale: float = 10.0  # multiplier of the seed
fail: bool = False  # raise on purpose
sleep_s: float = 0.0  # seconds to sleep before finishing'''

TOY_CELLS = [
    "import time\nfrom epi_utils.workbench import runs, plots\nimport matplotlib.pyplot as plt",
    "time.sleep(sleep_s)\nif fail:\n    raise RuntimeError('planted failure')",
    "fig, ax = plt.subplots()\nax.plot([0, 1], [0, seed])\nplots.save_figure(fig, 'line')",
    "runs.save_metrics({'value': seed * scale, 'nested': {'half': seed * scale / 2, 'half_ci95': [0, 1]}})",
]


@pytest.fixture
def toy_notebook(tmp_path: Path) -> Path:
    """A fast notebook whose headline is ``seed * scale``; ``fail``/``sleep_s`` plant failures."""
    return write_notebook(tmp_path / "notebooks", "99_toy", TOY_PARAMS, TOY_CELLS)

# session fixtures of the language-model testbed (small world, pretrained tiny model), for any test
pytest_plugins = ["lm_fixtures"]

