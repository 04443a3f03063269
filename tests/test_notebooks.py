"""Smoke run of every notebook through papermill on the ``smoke`` profile.

Each run must succeed, carry the provenance fields in ``metrics.json``, render ``report.html``
and (for the studies) save at least one figure, and every figure it saved must pass the figure lint
(``figures/lint.json``, written by ``plots.save_figure``: no overlapping labels, no legend over data,
labelled axes, log scales only on positive data, no text cut at the edge). Every figure it saved is in PNG and PDF,
and the images the notebook shows (so the report) are exactly the saved PNGs (``plots.save_figure`` shows the
file instead of letting the inline backend draw the figure again). ``make reports`` runs the same notebooks on
the default ``cpu`` profile.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from epi_utils.workbench.report import run_notebook

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROVENANCE = ("study", "profile", "parameters", "seed", "git_commit", "git_dirty", "versions", "device",
              "threads", "started_at", "wall_time_s", "status", "metrics")


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_smoke_run(nb_path, tmp_path, monkeypatch):
    # the kernel's own backend (inline), as in `make reports`: conftest's MPLBACKEND=Agg is for this process
    monkeypatch.delenv("MPLBACKEND", raising=False)
    run_dir = run_notebook(nb_path, profile="smoke", reports_dir=tmp_path / "reports", progress=False)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "success", f"{nb_path.name} failed: {record.get('error')}"
    for key in PROVENANCE:
        assert key in record, key
    assert record["metrics"], f"{nb_path.name} saved no headline numbers"
    assert (run_dir / "report.html").stat().st_size > 0
    pngs = sorted((run_dir / "figures").glob("*.png"))
    assert pngs, f"{nb_path.name} saved no figure"
    assert all(p.with_suffix(".pdf").is_file() for p in pngs), "a figure was saved without its PDF"
    shown = [base64.b64decode(out["data"]["image/png"]) for cell in _cells(run_dir / "notebook.ipynb")
             for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    saved = [p.read_bytes() for p in pngs]
    assert sorted(shown) == sorted(saved), (f"{nb_path.name} shows {len(shown)} image(s) and saved {len(saved)} "
                                            "PNG(s): every figure shown must be a saved file, shown once")
    lint = json.loads((run_dir / "figures" / "lint.json").read_text())
    problems = {name: found for name, found in lint.items() if found}
    assert not problems, f"{nb_path.name}: figures fail the lint: {problems}"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]
