"""JupyterLab in a real browser: `make lab` serves the notebooks, headless Chromium runs them.

One JupyterLab, started through the Makefile's ``lab`` target on a free loopback port with a
token, serves copies of the notebooks from a temporary folder (so no run writes outputs into the
committed notebooks; ``EPI_RUN_DIR`` sends ``save_metrics`` there too). Headless Chromium, driven
by selenium through Debian's ``chromedriver``, opens each notebook, presses Run > Run All Cells
and reads the rendered outputs:

- ``00_environment.ipynb`` as committed (its defaults): the torch line shows the version of the
  torch in this environment, the data folder is the ``EPI_DATA_DIR`` that ``make lab`` exported,
  the matmul line prints, and the last cell writes ``results.json``;
- ``05_fewshot_acd.ipynb`` with the smoke profile's values injected after its parameters cell (as
  ``epi run --profile smoke`` does), its cells up to its config, then its data loaded as the study
  loads them: it finds the FewAsp data (the split table lists the 64 FewAsp(single) training
  classes); the kernel is stopped once the data are found (the smoke run itself: test_notebooks);
- a two-line notebook: a ``tqdm.auto`` bar renders as an ipywidgets progress widget, not as text
  with "IProgress not found".

The same browser takes full-page screenshots of the published index and of each study's published
report into ``reports/screenshots/`` (ignored by git) and checks every image on them loaded.

Without ``chromium`` and ``chromedriver`` the tests are skipped with the command that installs them.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from epi_utils.workbench.index_page import study_title

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PUBLISHED = REPO / "reports" / "published"
SCREENSHOTS = REPO / "reports" / "screenshots"
ENABLE = "apt-get install -y chromium chromium-driver"  # as root; .ci/run does this before `make test`
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason=f"no chromium/chromedriver on PATH; enable this test with: {ENABLE}"),
]

# Test-only JupyterLab settings: keep every cell in the DOM (no windowing) so the outputs can be
# read, and no news toast over the menus.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}
# Every wait polls for what it waits for and returns as soon as it is there: the limit only bounds a
# hang, and is generous because `make test` runs beside other work (2 pytest workers, maybe a study run).
WAIT_S = 300
FEWSHOT_DATA = ("from epi_utils.acd import summary, training\n"
                "data = training.load_data(encoder=cfg.encoder, model_id=cfg.model_id)  # as run_study loads them\n"
                "print(data.missing_note or 'all splits present')\n"
                "tables.format_table(summary.split_table(data))")
WIDGET_CHECK = "from tqdm.auto import tqdm\nfor _ in tqdm(range(5), desc='widget check'):\n    pass"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, *, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`make lab` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url.split('?')[0]} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop_group(proc: subprocess.Popen) -> None:
    """End the process group the fixture started (make, jupyter, its kernels)."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab started by ``make lab`` on a free port with a token, serving a temporary folder."""
    import nbformat
    import papermill.iorw
    import papermill.parameterize

    from epi_utils.workbench import runs
    from epi_utils.workbench.params import resolve_parameters

    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOKS / "00_environment.ipynb", root)
    smoke = resolve_parameters(NOTEBOOKS / "05_fewshot_acd.ipynb", profile="smoke")
    nb05 = papermill.iorw.load_notebook_node(str(NOTEBOOKS / "05_fewshot_acd.ipynb"))  # as papermill reads it
    nb05 = papermill.parameterize.parameterize_notebook(nb05, smoke)
    # 05's own cells up to its config, then its data loaded as run_study loads them: the split table
    # without the smoke run's training (test_notebooks runs that; here it cost ~20 s of CPU, issue 34)
    setup = [i for i, c in enumerate(nb05.cells) if c.cell_type == "code" and "Config.from_parameters" in c.source]
    assert setup, "05_fewshot_acd.ipynb has no cell that builds its Config: update this test"
    nb05.cells = nb05.cells[:setup[0] + 1] + [nbformat.v4.new_code_cell(FEWSHOT_DATA)]
    nbformat.write(nb05, root / "05_fewshot_acd.ipynb")
    widget_nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(WIDGET_CHECK)])
    widget_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(widget_nb, root / "widget_check.ipynb")
    settings = base / "settings"
    for rel, value in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))

    token = secrets.token_hex(16)
    data_dir = str(runs.data_dir())
    env = {**os.environ, "EPI_DATA_DIR": data_dir, "EPI_RUN_DIR": str(base / "run"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime")}
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # a fresh make even when `make test` runs us
        env.pop(name, None)
    if Path(data_dir) == (REPO.parent / "shared" / "data").resolve():
        env.pop("EPI_DATA_DIR")  # the usual case: `make lab` must find ../shared/data by its own rule
    log = base / "lab.log"
    for attempt in range(3):  # the free port can be taken between _free_port() and Lab's bind (other tests run beside)
        port = _free_port()
        # `-o venv`: the bootstrap already ran for this interpreter; a test must not reinstall packages.
        lab_args = (f"--ServerApp.ip=127.0.0.1 --ServerApp.port={port} "
                    f"--ServerApp.port_retries=0 --IdentityProvider.token={token} --no-browser")
        with open(log, "wb") as out:
            proc = subprocess.Popen(["make", "--no-print-directory", "-C", str(REPO), "-o", "venv", "lab",
                                     f"VENV={sys.prefix}", f"LAB_DIR={root}", f"LAB_ARGS={lab_args}"],
                                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(f"{url}/api/status?token={token}", timeout=WAIT_S, proc=proc, log=log)
            break
        except RuntimeError:
            _stop_group(proc)
            if attempt == 2 or "already in use" not in log.read_text():
                raise
    try:
        yield {"url": url, "token": token, "root": root, "run_dir": base / "run", "data_dir": data_dir}
    finally:
        _stop_group(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1800", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _api(lab, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{lab['url']}{path}?token={lab['token']}", method=method)
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _open_and_run_all(driver, lab, name: str) -> None:
    """Open ``name`` alone in JupyterLab and press Run > Run All Cells in the menu bar."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    panel = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    steps = [
        ("the notebook's tab", EC.presence_of_element_located(
            (By.XPATH, "//li[contains(@class,'lm-TabBar-tab') and contains(@class,'lm-mod-current')]"
                       f"//div[contains(@class,'lm-TabBar-tabLabel') and text()='{name}']"))),
        ("its cells", EC.presence_of_element_located((By.CSS_SELECTOR, f"{panel} .jp-Cell"))),
        # Run All before the notebook's kernel is up makes Lab ask which kernel to start: wait for
        # the kernel on the server and in the page's status bar.
        ("an idle kernel on the server", lambda d: any(
            s["path"].endswith(name) and s["kernel"]["execution_state"] == "idle" for s in _api(lab, "/api/sessions"))),
        ("an idle kernel in the status bar", lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'), e => e.innerText)"
            ".some(t => t.includes('| Idle'));")),
        ("the Run menu", EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[text()='Run']]"))),
        ("Run All Cells", EC.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-Menu-item')][.//div[text()='Run All Cells']]"))),
    ]
    # ?reset: a fresh workspace, so the notebooks opened before are not restored beside this one.
    driver.get(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    for what, condition in steps:
        try:
            found = WebDriverWait(driver, WAIT_S).until(condition)
        except TimeoutException:
            shot = _failure_screenshot(driver, f"{name} {what}")
            raise AssertionError(f"{name}: no {what} in JupyterLab after {WAIT_S} s (the page: {shot})") from None
        if what in ("the Run menu", "Run All Cells"):
            found.click()


def _outputs(driver) -> str:
    """Rendered text of the outputs of the notebook in front (tqdm's figure spaces as spaces)."""
    return driver.execute_script(
        "const p = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');"
        "return p ? Array.from(p.querySelectorAll('.jp-OutputArea-output'), e => e.innerText).join('\\n') : '';").replace("\u2007", " ")


def _errors(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]'),"
        " e => e.innerText).filter(t => /Traceback|Error/.test(t));")


def _wait_for_output(driver, pattern: str, *, timeout: float, what: str) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, _outputs(driver))
        if match:
            return match
        errors = _errors(driver)
        assert not errors, f"{what}: the notebook raised in the browser:\n" + "\n".join(errors)[-3000:]
        time.sleep(0.5)
    shot = _failure_screenshot(driver, what)
    raise AssertionError(f"{what}: no output matching {pattern!r} after {timeout:.0f} s (the page: {shot}); "
                         f"rendered outputs:\n{_outputs(driver)[-3000:]}")


def _failure_screenshot(driver, what: str) -> str:
    """Save what the browser shows, for a failing check; returns the path relative to the repository."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / ("failed_" + re.sub(r"\W+", "_", what).strip("_") + ".png")
    driver.save_screenshot(str(path))
    return str(path.relative_to(REPO))


def _busy_prompts(driver) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt'))"
        ".filter(e => e.innerText.includes('*')).length;")


def test_environment_notebook_runs_in_lab(lab, browser):
    import torch

    from epi_utils.workbench.params import parse_parameters

    _open_and_run_all(browser, lab, "00_environment.ipynb")
    match = _wait_for_output(browser, r"median [\d.]+ ms per (\d+)x\1 matmul = [\d.]+ GFLOP/s",
                             timeout=WAIT_S, what="00_environment")
    deadline = time.monotonic() + WAIT_S
    while _busy_prompts(browser) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not _errors(browser)
    text = _outputs(browser)
    assert re.search(rf"\btorch\s+{re.escape(torch.__version__)}\s", text), \
        f"no torch {torch.__version__} line in the rendered environment table:\n{text[:2000]}"
    assert re.search(rf"\bdata_dir\s+{re.escape(lab['data_dir'])}\s", text), \
        f"the kernel does not see EPI_DATA_DIR={lab['data_dir']} exported by `make lab`:\n{text[:2000]}"
    default = parse_parameters(NOTEBOOKS / "00_environment.ipynb")["matmul_size"].default
    assert int(match.group(1)) == default, "Run All in Lab did not use the notebook's defaults"
    results = json.loads((lab["run_dir"] / "results.json").read_text())
    assert results["metrics"]["matmul_gflops"] > 0
    kernels = json.loads(subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
                                        capture_output=True, text=True, check=True).stdout)["kernelspecs"]
    assert kernels["epi-workbench"]["spec"]["env"]["EPI_DATA_DIR"] == lab["data_dir"], \
        "`make lab` did not register the project kernel with the data folder"


def test_fewshot_notebook_finds_its_data_in_lab(lab, browser):
    from epi_utils.workbench import runs

    if not (runs.data_dir() / "fewasp").is_dir():
        pytest.skip(f"FewAsp is not under {runs.data_dir()}; enable with: epi data fetch fewasp")
    _open_and_run_all(browser, lab, "05_fewshot_acd.ipynb")
    try:
        # The split table: FewAsp(single) train has the paper's 64 training classes and some instances.
        _wait_for_output(browser, r"FewAsp\(single\)\s+train\s+64\s+[1-9]\d*\b", timeout=WAIT_S,
                         what="05_fewshot_acd (smoke values)")
    finally:  # the data are found: stop the kernel rather than train the smoke run
        for session in _api(lab, "/api/sessions"):
            _api(lab, f"/api/kernels/{session['kernel']['id']}", method="DELETE")


def test_progress_bar_is_a_widget_in_lab(lab, browser):
    _open_and_run_all(browser, lab, "widget_check.ipynb")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        bars = browser.execute_script(
            "return document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-OutputArea .widget-hprogress').length;")
        text = _outputs(browser)
        if bars or "IProgress not found" in text or _errors(browser):
            break
        time.sleep(0.5)
    else:
        shot = _failure_screenshot(browser, "widget_check")
        raise AssertionError(f"no progress output after {WAIT_S} s (the page: {shot}):\n{text[-2000:]}")
    assert "IProgress not found" not in text, "tqdm.auto fell back to a text bar: is ipywidgets installed?"
    assert not _errors(browser), _errors(browser)
    assert bars, f"tqdm.auto drew no progress widget:\n{text[-2000:]}"
    assert "widget check" in text and "5/5" in text, text[-2000:]


def _full_page_png(driver, path: Path) -> None:
    """A PNG of the whole page (not only the window), height capped at 8000 px."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_screenshots_of_published_pages(browser):
    index = PUBLISHED / "index.html"
    if not index.is_file():
        pytest.skip(f"nothing published yet ({index.relative_to(REPO)}); enable with: make publish")
    reports = sorted(PUBLISHED.glob("*/report.html"))  # one report per published study
    assert reports, "the published index has no report beside it"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = [(index, SCREENSHOTS / "published_index.png")]
    pages += [(report, SCREENSHOTS / f"published_{report.parent.name}.png") for report in reports]
    for page, png in pages:
        browser.get(page.as_uri())
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80));")
        assert not broken, f"{page.relative_to(REPO)}: images that did not load: {broken}"
        assert browser.title.strip(), f"{page.relative_to(REPO)} has no title"
        if page == index:
            body = browser.find_element("tag name", "body").text
            missing = [r.parent.name for r in PUBLISHED.glob("*/report.html") if study_title(r.parent.name) not in body]
            assert not missing, f"the published index does not name the published studies {missing}"
        _full_page_png(browser, png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
