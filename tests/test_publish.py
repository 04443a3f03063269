"""Reports a researcher reads: declared headlines in the index, publishing keeps other studies,
titles name study and profile, no machine paths, progress reaches the terminal and not the report."""
from __future__ import annotations

import io
import json
import os
import shutil

from conftest import TOY_PARAMS, write_notebook

from epi_utils.workbench import progress
from epi_utils.workbench.report import publish, run_notebook, write_index

HEADLINE_CELLS = [
    "from epi_utils.workbench import runs\nfrom epi_utils.workbench.progress import progress\n"
    "import os, warnings\nfrom tqdm.auto import tqdm",
    "for _ in progress(range(3), desc='unit of work'):\n    pass\n"
    "for _ in tqdm(range(3), desc='library bar'):\n    pass\n"
    "warnings.warn('a library warning')\nprint('data at', os.environ['EPI_DATA_DIR'])",
    "runs.save_metrics({'zz_first': 1.0, 'main': {'acc': seed * scale, 'acc_ci95': [0.5, 1.5]}},\n"
    "                  headlines=['main.acc'], timings={'seconds': 0.1})",
]


def test_index_shows_declared_headlines_and_publish_keeps_other_studies(tmp_path, monkeypatch):
    monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path / "machine-specific-data"))
    nbs = tmp_path / "notebooks"
    a = write_notebook(nbs, "91_alpha", TOY_PARAMS, HEADLINE_CELLS)
    b = write_notebook(nbs, "92_beta", TOY_PARAMS, HEADLINE_CELLS)
    reports = tmp_path / "r"
    stream = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    run_a = run_notebook(a, profile="cpu", overrides={"seed": 1}, reports_dir=reports, progress=False)
    run_notebook(b, profile="cpu", overrides={"seed": 2}, reports_dir=reports, progress=False)
    record = json.loads((run_a / "metrics.json").read_text())
    assert record["status"] == "success", record.get("error")
    assert record["headlines"] == ["main.acc"] and record["timings"] == {"seconds": 0.1}
    assert "seconds" not in json.dumps(record["metrics"])
    # progress: one terminal line per unit with an ETA, and nothing of it (or of tqdm/warnings) in the report
    assert "unit of work: 3/3 it" in stream.getvalue() and "ETA" in stream.getvalue()
    page = (run_a / "report.html").read_text()
    for spam in ("unit of work", "library bar", "a library warning", "machine-specific-data", str(tmp_path)):
        assert spam not in page, spam
    assert "$EPI_DATA_DIR" in page
    assert "<title>91_alpha · cpu profile</title>" in page
    index = write_index(reports).read_text()
    # grouped by study, headlines named for a reader and rounded to their interval; no raw dotted keys
    assert "<h2>91 · alpha</h2>" in index and "<h2>92 · beta</h2>" in index
    assert "main · acc: 10.00 [0.50, 1.50]" in index and "zz_first" not in index and "main.acc" not in index
    # publish both from a process whose EPI_DATA_DIR differs: the run's own data folder (recorded
    # privately in its folder) is still scrubbed, and that note is not published
    monkeypatch.setenv("EPI_DATA_DIR", str(tmp_path / "elsewhere"))
    published = publish(reports, profile="cpu")
    page = (published / "91_alpha" / "report.html").read_text()
    assert "machine-specific-data" not in page and "$EPI_DATA_DIR" in page
    assert not list(published.rglob(".machine_paths.json"))
    shutil.rmtree(reports / "92_beta")
    run_notebook(a, profile="cpu", overrides={"seed": 3}, reports_dir=reports, progress=False)
    target = publish(reports, profile="cpu")
    listed = (target / "index.html").read_text()
    assert "92_beta" in listed and "91_alpha" in listed and "30.00 [0.50, 1.50]" in listed
    assert (target / "92_beta" / "report.html").exists()
    # another profile is linked from the top published index, and links back
    run_notebook(a, profile="smoke", reports_dir=reports, progress=False)
    publish(reports, profile="smoke")
    assert "smoke/index.html" in (target / "index.html").read_text()
    assert "../index.html" in (target / "smoke" / "index.html").read_text()


def test_progress_is_a_bar_outside_batch_runs(monkeypatch, capsys):
    monkeypatch.delenv("EPI_RUN_DIR", raising=False)
    assert not progress.quiet()
    assert list(progress.progress(range(2), desc="x")) == [0, 1]
    assert os.environ.get("EPI_RUN_DIR") is None


def test_a_rehearsal_is_never_published(tmp_path):
    nb = write_notebook(tmp_path / "notebooks", "93_gamma", TOY_PARAMS + "\nrehearse: bool = False  # rehearsal",
                        HEADLINE_CELLS, profiles={"cpu": "seed: 1\n", "gpu": "seed: 2\n"})
    reports = tmp_path / "r"
    run_notebook(nb, profile="gpu", overrides={"rehearse": True}, reports_dir=reports, progress=False)
    assert "gpu (rehearsal)" in write_index(reports).read_text()
    import pytest

    with pytest.raises(FileNotFoundError, match="no successful 'gpu' run"):
        publish(reports, profile="gpu")


def test_publish_named_runs_under_a_label(tmp_path):
    """A grid run in parts (one setting per run) is published part by part under its own labels."""
    import pytest

    nb = write_notebook(tmp_path / "notebooks", "94_delta", TOY_PARAMS, HEADLINE_CELLS,
                        profiles={"cpu": "seed: 1\n", "cpu-long": "seed: 2\n"})
    reports = tmp_path / "r"
    run_notebook(nb, profile="cpu", reports_dir=reports, progress=False)
    publish(reports, profile="cpu")
    first = run_notebook(nb, profile="cpu-long", overrides={"scale": 1}, reports_dir=reports, progress=False)
    run_notebook(nb, profile="cpu-long", overrides={"scale": 2}, reports_dir=reports, progress=False)
    target = publish(reports, profile="cpu-long", run_dirs=[first], label="cpu-long-part1")
    assert target == reports / "published" / "cpu-long-part1"
    assert json.loads((target / "94_delta" / "metrics.json").read_text())["run_id"] == first.name  # not the newest
    assert "cpu-long-part1/index.html" in (reports / "published" / "index.html").read_text()
    with pytest.raises(ValueError, match="only a successful, non-rehearsal 'cpu' run"):
        publish(reports, profile="cpu", run_dirs=[first], label="x")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        publish(reports, profile="cpu-long", run_dirs=[tmp_path], label="x")
    with pytest.raises(ValueError, match="publish label"):
        publish(reports, profile="cpu-long", run_dirs=[first], label="../x")


CARD_CELLS = [
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "from epi_utils.workbench import plots, runs\n"
    "from epi_utils.workbench.cards import Card, Headline\n"
    "from epi_utils.workbench.stats import compare\n"
    "from epi_utils.workbench.cards import answer_sentence",
    "cmp = compare([0.50, 0.61, 0.58, 0.66], [0.40, 0.42, 0.45, 0.41], unit='seeds', a_name='new', b_name='old',\n"
    "              metric='accuracy')\n"
    "card = Card('Is the new method more accurate than the old one?', answer_sentence(cmp),\n"
    "            (Headline('accuracy, new', 0.5875, 0.49, 0.68, 'share', '95% t-interval over 4 seeds'),\n"
    "             Headline('accuracy, old', 0.42, 0.39, 0.45, 'share', '95% t-interval over 4 seeds'),\n"
    "             Headline('seeds', 4.0)), figure='key_result')\n"
    "fig, ax = plt.subplots(figsize=(3, 2))\nax.bar(['old', 'new'], [0.42, 0.59])\nax.set_ylabel('accuracy')\n"
    "plots.save_figure(fig, 'key_result')\n"
    "runs.save_metrics({'acc': {'new': 0.5875}, 'card': card.to_dict(),\n"
    "                   'config_table': [{'parameter': 'scale', 'value': scale, 'default': 10.0,\n"
    "                                     'changed': 'yes' if scale != 10.0 else '', 'meaning': 'multiplier'}]},\n"
    "                  headlines=['acc.new'])",
]


def test_published_index_is_a_results_page_and_reports_put_results_first(tmp_path):
    """A study's card (question, answer from its verdict, headlines, key figure) reaches the published
    index and the top of its report; the configuration is a collapsed parameter table."""
    nb = write_notebook(tmp_path / "notebooks", "95_cards", TOY_PARAMS, CARD_CELLS)
    reports = tmp_path / "r"
    run = run_notebook(nb, profile="cpu", overrides={"scale": 2.0}, reports_dir=reports, progress=False)
    assert json.loads((run / "metrics.json").read_text())["status"] == "success"
    target = publish(reports, profile="cpu")
    index = (target / "index.html").read_text()
    assert "Is the new method more accurate than the old one?" in index
    assert "new is better than old on accuracy: new - old" in index  # built from the verdict, not typed
    assert "accuracy, new" in index and "0.588 [0.490, 0.680]" in index and "<td>4</td>" in index
    assert "<img class='thumb' src='95_cards/key_result.png'" in index and (target / "95_cards" / "key_result.png").is_file()
    page = (target / "95_cards" / "report.html").read_text()
    result_at, notebook_at = page.find("Is the new method more accurate"), page.find("<h1")
    assert 0 <= result_at < notebook_at, "the result card comes before the notebook's narrative"
    assert "<details" in page and "Configuration: 1 of 1 parameters differ from their defaults" in page
    assert "{&#x27;" not in page and "{'" not in page  # no raw dict
