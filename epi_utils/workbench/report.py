"""Execute notebooks with papermill, render them as reports, keep the index of runs.

One run = one folder ``<reports>/<study>/<run-id>/`` holding

``notebook.ipynb``  the executed notebook (kept even when execution fails, up to the failing cell)
``report.html``     rendered with code cells hidden, so it reads as a report
``figures/``        PNG/PDF files the notebook saved with :func:`epi_utils.workbench.plots.save_figure`
``results.json``    the notebook's headline numbers (:func:`epi_utils.workbench.runs.save_metrics`)
``metrics.json``    provenance + status + headline numbers, written by :func:`run_notebook`

``metrics.json`` is first written with ``"status": "running"`` and the runner's process id, and
replaced atomically when the run ends (``"success"`` or ``"failed"`` with the error). A runner
that is killed leaves ``"running"``; :func:`collect_runs` reports such a run as
``"interrupted"`` once its process is gone, so no killed run ever claims success.
"""
from __future__ import annotations

import contextlib
import html
import json
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from epi_utils.workbench import index_page, runs
from epi_utils.workbench.params import effective_parameters, resolve_parameters, study_name
from epi_utils.workbench.progress import batch_environment
from epi_utils.workbench.tables import ReaderTable

STATUS_RUNNING, STATUS_SUCCESS, STATUS_FAILED, STATUS_INTERRUPTED = "running", "success", "failed", "interrupted"


def default_reports_dir() -> Path:
    return runs.repo_root() / "reports"


class RunInterrupted(KeyboardInterrupt):
    """Raised by :func:`run_notebook` after a Ctrl-C (SIGINT): the run is already marked
    ``interrupted`` on disk and the index refreshed; ``run_dir`` names it."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


#: how often a kernel that dies (or stays silent) before its first reply is started again, each time
#: with fresh ports: kernels started side by side on a loaded machine can lose the race for a port
KERNEL_START_ATTEMPTS = 3
#: seconds a kernel may take to answer its first request (papermill's default, 60, is short on a loaded machine)
KERNEL_START_TIMEOUT = 180


def run_notebook(nb_path: Path | str, *, profile: str = "cpu", overrides: Mapping[str, Any] | None = None,
                 reports_dir: Path | str | None = None, run_id: str | None = None,
                 refresh_index: bool = True, progress: bool = True, kernel_name: str = "python3",
                 validate: Callable[[Mapping[str, Any]], Any] | None = None) -> Path:
    """Execute one notebook through papermill and render it; return the run folder.

    Parameters are validated before anything runs (see
    :func:`epi_utils.workbench.params.resolve_parameters` and :func:`epi_utils.workbench.runs.preflight`);
    ``profile`` and
    ``run_id`` must be plain names (:func:`epi_utils.workbench.runs.check_name`). ``validate``, when
    given, is called with every effective parameter (the notebook's defaults overlaid with the
    profile and ``overrides``) before the run folder is made; it raises (a ``ParameterError``, e.g. the
    study config's ``ConfigError``) to refuse them: ``epi run`` passes the notebook's config class's
    check. A notebook that
    raises gives a run with ``status: failed``; this function then returns normally (the caller
    reads the status). A Ctrl-C marks the run ``interrupted`` at once, refreshes the index and
    raises :class:`RunInterrupted`. A kernel that dies before its first reply is started again
    (:data:`KERNEL_START_ATTEMPTS`).

    ``metrics.json`` records ``parameters`` (every effective parameter), ``parameters_given`` (what
    the profile and ``overrides`` set), ``seed``, and ``data_files``: the SHA-256 of every data file
    the run read through :func:`epi_utils.workbench.runs.record_data_file`, each checked against the
    registry's known hashes (``ok``, ``corrupt``, ``unknown hash``).
    """
    import papermill as pm

    runs.check_run_request(profile=profile, overrides=overrides, run_id=run_id)
    nb_path = Path(nb_path).resolve()
    parameters = resolve_parameters(nb_path, profile=profile, overrides=overrides)
    effective = effective_parameters(nb_path, parameters)
    runs.preflight(effective)
    if validate is not None:
        validate(effective)
    study = study_name(nb_path)
    reports_dir = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    run_id = run_id or runs.new_run_id(profile=profile, parameters=parameters)
    run_dir = reports_dir / study / run_id
    if run_dir.exists():
        raise FileExistsError(f"run folder already exists: {run_dir}")
    (run_dir / "figures").mkdir(parents=True)
    started = time.time()
    record: dict[str, Any] = {
        "study": study, "notebook": str(nb_path.relative_to(runs.repo_root()) if nb_path.is_relative_to(runs.repo_root()) else nb_path),
        "run_id": run_id, "profile": profile, "parameters": effective, "parameters_given": parameters,
        "seed": effective.get("seed"),
        "status": STATUS_RUNNING, **runs.runner_identity(), "started_at": runs.utc_now(),
        **runs.provenance(device=str(effective.get("device", "auto"))),  # the device the kernel is given
    }
    runs.atomic_write_json(run_dir / "metrics.json", record)
    runs.atomic_write_json(run_dir / MACHINE_PATHS, {"data_dir": str(runs.data_dir())})  # never published
    error = None
    # The kernel inherits EPI_RUN_DIR and a quiet environment (no library progress bars or warnings
    # in the report); the study's progress lines reach this terminal through progress.log.
    try:
        with batch_environment(run_dir, prefix=f"[{study} {run_id}] " if not progress else ""), _quiet_interrupt():
            for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
                try:
                    with _kernel_log(run_dir) as manager_class:  # a new manager: a new connection file, new ports
                        pm.execute_notebook(str(nb_path), str(run_dir / "notebook.ipynb"), parameters=parameters,
                                            kernel_name=kernel_name, cwd=str(nb_path.parent), progress_bar=progress,
                                            log_output=False, kernel_manager_class=manager_class,
                                            start_timeout=KERNEL_START_TIMEOUT)
                except Exception as exc:  # papermill.PapermillExecutionError and kernel failures
                    if getattr(exc, "ename", None) == "KeyboardInterrupt":
                        raise KeyboardInterrupt from None  # the kernel got the same Ctrl-C first
                    if kernel_never_replied(exc) and attempt < KERNEL_START_ATTEMPTS:
                        record["kernel_starts"] = attempt + 1
                        _note_kernel_retry(run_dir, attempt, exc)
                        continue
                    error = {"type": type(exc).__name__, "message": _short_error(exc)}
                break
    except KeyboardInterrupt:
        _interrupted(run_dir, record, started, reports_dir if refresh_index else None)
    record["wall_time_s"] = round(time.time() - started, 2)
    record["finished_at"] = runs.utc_now()
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "metrics" not in results or set(results) - {"metrics", "headlines", "timings"}:
        results = {"metrics": results}  # results.json written by an older save_metrics
    record["metrics"] = results.get("metrics", {})
    record["headlines"] = results.get("headlines", [])
    record["timings"] = results.get("timings", {})
    record["data_files"] = _data_files(run_dir)
    if error is None and not results_path.exists():
        error = {"type": "MissingResults", "message": "the notebook finished without calling runs.save_metrics(...)"}
    record["status"] = STATUS_FAILED if error else STATUS_SUCCESS
    if error:
        record["error"] = error
    try:
        if (run_dir / "notebook.ipynb").exists():
            render_html(run_dir / "notebook.ipynb", run_dir / "report.html", record=record)
    except Exception as exc:  # rendering must never hide the run's status
        record.setdefault("render_error", f"{type(exc).__name__}: {exc}")
    record.pop("runner_pid", None)
    runs.atomic_write_json(run_dir / "metrics.json", record)
    runs.remove_empty_dirs(run_dir)
    if refresh_index:
        write_index(reports_dir)
    return run_dir


def kernel_never_replied(exc: BaseException) -> bool:
    """Whether papermill failed because the kernel died or stayed silent before its first reply
    (``kernel_info``): no cell ran, so the run can start a new kernel."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and not hasattr(exc, "ename") and (
        "Kernel died before replying to kernel_info" in text or "Kernel didn't respond" in text)


def modified_data_files(record: Mapping[str, Any]) -> list[str]:
    """The data files a run read whose SHA-256 differs from the registry's (``state: corrupt``)."""
    files = record.get("data_files") or {}
    return [name for name, info in files.items() if isinstance(info, Mapping) and info.get("state") == "corrupt"]


def _note_kernel_retry(run_dir: Path, attempt: int, exc: BaseException) -> None:
    with open(run_dir / KERNEL_LOG, "a", encoding="utf-8") as fh:
        fh.write(f"[epi] kernel start {attempt} of {KERNEL_START_ATTEMPTS} failed ({exc}); starting a new "
                 "kernel with fresh ports\n")


def _data_files(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The run's recorded data files (:func:`runs.read_data_files`), each with its state against the
    registry's known SHA-256 (``ok`` / ``corrupt`` / ``unknown hash``); the run folder's list is then
    dropped (``metrics.json`` holds it)."""
    from epi_utils.workbench import datasets

    found = runs.read_data_files(run_dir)
    known: dict[str, str] = {}
    # the registry's hashes live in the study packages (torch and their own imports): loaded only when the
    # run read a data file, so a run that read none (a sweep worker's toy run) does not import them
    for name in datasets.DATASETS if found else ():
        try:
            known.update({f"$EPI_DATA_DIR/{rel}": digest for rel, digest in datasets.known_hashes(name).items()})
        except (ImportError, AttributeError):  # a study package that cannot be imported here
            continue
    for name, info in found.items():
        want = known.get(name)
        info["state"] = (datasets.FILE_UNKNOWN if want is None
                         else datasets.FILE_OK if want == info["sha256"] else datasets.FILE_CORRUPT)
    (run_dir / runs.DATA_FILES).unlink(missing_ok=True)
    return found


#: JupyterLab copies of notebooks with a profile's values (:func:`write_lab_copy`), beside the notebooks
LAB_FOLDER = "lab"


def write_lab_copy(nb_path: Path | str, *, profile: str = "cpu", overrides: Mapping[str, Any] | None = None,
                   validate: Callable[[Mapping[str, Any]], Any] | None = None) -> Path:
    """``epi lab-params``: write ``notebooks/lab/<stem>.<profile>.ipynb``, a copy of the notebook (outputs
    cleared) with the profile's and ``overrides``' values in an ``injected-parameters`` cell after the
    parameters cell, exactly as ``epi run`` injects them; return its path.

    The values are validated as for a run (``validate`` as in :func:`run_notebook`). The folder holds a
    ``.gitignore`` of ``*``, so copies are never committed and never mark a run's tree dirty; the
    committed notebook is not touched, and Lab's autosave of the copy changes nothing tracked."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    runs.check_run_request(profile=profile, overrides=overrides, run_id=None)
    nb_path = Path(nb_path)
    parameters = resolve_parameters(nb_path, profile=profile, overrides=overrides)
    effective = effective_parameters(nb_path, parameters)
    runs.preflight(effective)
    if validate is not None:
        validate(effective)
    nb = parameterize_notebook(load_notebook_node(str(nb_path)), dict(parameters), report_mode=False)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    folder = nb_path.parent / LAB_FOLDER
    folder.mkdir(exist_ok=True)
    if not (folder / ".gitignore").exists():
        runs.atomic_write_text(folder / ".gitignore", "# copies written by `epi lab-params`: never committed\n*\n")
    return runs.atomic_write_text(folder / f"{nb_path.stem}.{profile}.ipynb", nbformat.writes(nb))


#: loggers that report the kernel's shutdown after a Ctrl-C (tracebacks of never-retrieved tasks, "Kernel died")
_SHUTDOWN_LOGGERS = ("asyncio", "papermill", "nbclient", "traitlets", "jupyter_client")


@contextlib.contextmanager
def _quiet_interrupt():
    """While a notebook executes: the first Ctrl-C (SIGINT) or SIGTERM (``kill``, a batch scheduler's
    stop) silences the loggers of the kernel machinery (whose shutdown would print tracebacks) and
    raises ``KeyboardInterrupt``, so the run is marked interrupted at once either way. Only in the
    main thread; SIGINT is left alone where it is ignored (a job started in the background with ``&``)."""
    import logging
    import signal

    if not _main_thread():
        yield
        return

    def on_signal(signum, frame):
        for name in _SHUTDOWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise KeyboardInterrupt

    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        handled.append(signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


KERNEL_LOG = "kernel.log"


@contextlib.contextmanager
def _kernel_log(run_dir: Path):
    """A kernel manager class whose kernel writes its own stderr (start-up warnings, the messages of
    a kernel stopped mid-reply by Ctrl-C) to ``<run>/kernel.log`` instead of the terminal."""
    from jupyter_client.manager import AsyncKernelManager

    handle = open(run_dir / KERNEL_LOG, "ab")

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stderr", handle)
            return await AsyncKernelManager._async_start_kernel(self, **kw)

    try:
        yield LoggedKernelManager
    finally:
        handle.close()
        log = run_dir / KERNEL_LOG
        if log.exists() and log.stat().st_size == 0:
            log.unlink()


def _interrupted(run_dir: Path, record: dict, started: float, reports_dir: Path | None):
    """Ctrl-C or SIGTERM: mark the run, refresh the index, raise :class:`RunInterrupted` (further
    signals are ignored while the record is written)."""
    import signal

    signals = (signal.SIGINT, signal.SIGTERM) if _main_thread() else ()
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        runs.mark_interrupted(run_dir, record=record, started=started)
        if reports_dir is not None:
            write_index(reports_dir)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise RunInterrupted(run_dir) from None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _short_error(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]


def _banner(record: Mapping[str, Any]) -> str:
    status = record.get("status", "?")
    colour = {"success": "#1b7837", "failed": "#b2182b"}.get(status, "#8c510a")
    commit = record.get("git_commit") or "unknown commit"
    dirty = " (uncommitted changes)" if record.get("git_dirty") else ""
    parts = [f"<b>{html.escape(str(record.get('study')))}</b>", f"run {html.escape(str(record.get('run_id')))}",
             f"profile <b>{html.escape(str(record.get('profile')))}</b>",
             f"status <b style='color:{colour}'>{html.escape(str(status))}</b>",
             f"commit <code>{html.escape(str(commit))[:12]}</code>{dirty}",
             f"wall time {record.get('wall_time_s', '?')} s", f"device {html.escape(str(record.get('device')))}"]
    err = ""
    if record.get("error"):
        err = f"<br><b>Error:</b> <code>{html.escape(str(record['error'].get('message')))}</code>"
    altered = modified_data_files(record)
    if altered:
        err += (f"<br><b>Data:</b> {len(altered)} file(s) read differ from their known SHA-256 "
                f"(<code>epi data check</code>): <code>{html.escape(', '.join(altered[:3]))}</code>")
    return ("<div style='font-family:sans-serif;padding:8px 12px;margin:8px;border:1px solid #ccc;"
            f"border-left:6px solid {colour};background:#fafafa'>" + " · ".join(parts) + err + "</div>")


def _result_box(record: Mapping[str, Any]) -> str:
    """The run's result card (question, answer, headline numbers) on top of its report: results first."""
    if not isinstance((record.get("metrics") or {}).get("card"), Mapping):
        return ""
    block = index_page.card_block(record, title="Result")
    return f"<div style='margin:8px;font-family:sans-serif'>{index_page.CARD_STYLE}{block}</div>"


def _configuration(record: Mapping[str, Any]) -> str:
    """The run's configuration as a collapsed parameter table (name, value, default, changed, meaning):
    the rows the study wrote (``metrics["config_table"]``, :func:`epi_utils.workbench.tables.parameter_table`),
    else the recorded parameters, those given on the command line or by the profile marked."""
    rows = (record.get("metrics") or {}).get("config_table")
    what = "differ from their defaults"
    if not isinstance(rows, list) or not rows:
        given = set(record.get("parameters_given") or ())
        rows = [{"parameter": k, "value": v, "default": "", "changed": "given" if k in given else "", "meaning": ""}
                for k, v in (record.get("parameters") or {}).items()]
        what = "set by the profile or on the command line"
    if not rows:
        return ""
    import pandas as pd

    columns = [c for c in ("parameter", "value", "default", "changed", "meaning") if any(str(r.get(c, "")) for r in rows)]
    frame = pd.DataFrame([{c: str(r.get(c, "")) for c in columns} for r in rows], columns=columns)
    changed = sum(1 for r in rows if r.get("changed"))
    table = ReaderTable(frame, summary=f"Configuration: {changed} of {len(rows)} parameters {what}")  # as parameter_table shows it
    return f"<div style='margin:8px 12px;font-family:sans-serif;font-size:13px'>{table.to_html()}</div>"


#: a run folder's private note of the machine paths its report must not show (read when rendering)
MACHINE_PATHS = ".machine_paths.json"


def _run_data_dirs(run_dir: Path) -> list[str]:
    """The data folder a run read (recorded at its start), whatever ``EPI_DATA_DIR`` is now."""
    try:
        return [json.loads((Path(run_dir) / MACHINE_PATHS).read_text())["data_dir"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _scrub_paths(text: str, *, data_dirs: Sequence[str | Path] = ()) -> str:
    """Replace machine paths (this process's data folder and ``data_dirs``, the repository, home)
    in rendered text with names that mean the same on any machine: ``$EPI_DATA_DIR``, ``<repo>``, ``~``."""
    subs = []
    pairs = [(d, "$EPI_DATA_DIR") for d in (runs.data_dir(), *data_dirs)]
    for path, name in (*pairs, (runs.repo_root(), "&lt;repo&gt;"), (Path.home(), "~")):
        for variant in {str(path), str(Path(path).resolve())}:
            if len(variant) > 1:
                subs.append((variant, name))
    for variant, name in sorted(subs, key=lambda s: -len(s[0])):
        text = text.replace(variant, name)
    return text


def report_title(record: Mapping[str, Any] | None, fallback: str) -> str:
    """``"02_epi_vs_static · cpu profile"``: the page title of a report."""
    if not record:
        return fallback
    return f"{record.get('study', fallback)} · {record.get('profile', '?')} profile"


def render_html(nb_file: Path | str, html_file: Path | str, *, record: Mapping[str, Any] | None = None,
                embed_images: bool = True) -> Path:
    """Render an executed notebook as a report: code cells hidden, a provenance banner on top, the
    page titled with the study and profile, and machine paths replaced (:func:`_scrub_paths`; the
    data folder the run recorded in its folder's :data:`MACHINE_PATHS`, and this process's).

    Images in outputs are embedded (the HTML is self-contained).
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(nb_file), as_version=4)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            embed_images=embed_images)
    title = report_title(record, Path(nb_file).parent.name)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    if record is not None:
        marker = "<body"
        pos = body.find(marker)
        end = body.find(">", pos) + 1 if pos >= 0 else 0
        body = body[:end] + _banner(record) + _result_box(record) + _configuration(record) + body[end:]
    data_dirs = _run_data_dirs(Path(nb_file).parent)
    runs.atomic_write_text(html_file, _scrub_paths(body, data_dirs=data_dirs))
    return Path(html_file)


@dataclass
class RunRecord:
    """A run found on disk."""

    study: str
    run_id: str
    path: Path
    status: str
    profile: str | None
    started_at: str | None
    metrics: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def collect_runs(reports_dir: Path | str | None = None) -> list[RunRecord]:
    """Every run folder under ``reports_dir`` (``<study>/<run-id>/metrics.json``), newest first."""
    reports_dir = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    found: list[RunRecord] = []
    for metrics_file in sorted(reports_dir.glob("*/*/metrics.json")):
        if metrics_file.parts[-3] in ("published", "_interactive", "_sweeps"):
            continue
        try:
            rec = json.loads(metrics_file.read_text())
        except (OSError, json.JSONDecodeError):
            rec = {"status": "unreadable"}
        status = rec.get("status", "unknown")
        if status == STATUS_RUNNING:  # the PID alone could be reused, or belong to another host
            alive = runs.runner_alive(rec)
            status = STATUS_RUNNING if alive else STATUS_INTERRUPTED if alive is False else "unknown"
        found.append(RunRecord(study=metrics_file.parts[-3], run_id=metrics_file.parts[-2], path=metrics_file.parent,
                               status=status, profile=rec.get("profile"), started_at=rec.get("started_at"),
                               metrics=rec.get("metrics") or {}, record=rec))
    found.sort(key=lambda r: (r.started_at or "", r.run_id), reverse=True)
    return found


def write_index(reports_dir: Path | str | None = None) -> Path:
    """Rebuild ``<reports>/index.html``: every run grouped by study, newest first
    (:func:`epi_utils.workbench.index_page.write_index`)."""
    reports_dir = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    return index_page.write_index(reports_dir, collect_runs(reports_dir))


def publish(reports_dir: Path | str | None = None, *, profile: str = "cpu",
            run_dirs: Sequence[Path | str] = (), label: str | None = None) -> Path:
    """Copy the newest successful ``profile`` run of each study into ``<reports>/published/``
    (the default ``cpu`` profile) or ``<reports>/published/<profile>/`` (any other profile).

    ``run_dirs`` publishes those run folders instead of the newest (e.g. a ``cpu-long`` grid run in
    parts, one setting per run), each under ``published/<label>/`` where ``label`` names the part
    (``cpu-long-5way5shot``); every run must be a successful, non-rehearsal run of ``profile``.
    Each study gets ``<target>/<study>/report.html`` (self-contained, figures embedded, naming
    the commit that produced it) and ``metrics.json``. Studies without a new run keep their
    published pages: ``<target>/index.html`` lists every study published there, and the top
    published index links every published profile.
    """
    reports_dir = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    root = reports_dir / "published"
    if label is not None:
        runs.check_name(label, what="publish label")
    name = label or profile
    target = root if name == "cpu" else root / name
    candidates = collect_runs(reports_dir)
    chosen: dict[str, RunRecord] = {}
    if run_dirs:
        found = {run.path.resolve(): run for run in candidates}
        for path in sorted({Path(d).resolve() for d in run_dirs}):
            run = found.get(path)
            if run is None:
                raise FileNotFoundError(f"{path} is not a run folder under {reports_dir} (no metrics.json)")
            if not _publishable(run, profile):
                raise ValueError(f"{path}: only a successful, non-rehearsal '{profile}' run can be published "
                                 f"(this one: status {run.status}, profile {run.profile}, "
                                 f"rehearsal {_is_rehearsal(run)})")
            if run.study in chosen:
                raise ValueError(f"two runs of {run.study} given; publish each under its own label (--as)")
            chosen[run.study] = run
    else:
        chosen = newest_publishable(candidates, profile=profile)
    if not chosen:
        raise FileNotFoundError(f"no successful '{profile}' run under {reports_dir} to publish; run `epi run` first")
    target.mkdir(parents=True, exist_ok=True)
    for study, run in sorted(chosen.items()):
        dest = target / study
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        render_html(run.path / "notebook.ipynb", dest / "report.html", record=run.record, embed_images=True)
        shutil.copy2(run.path / "metrics.json", dest / "metrics.json")
        figure = index_page.key_figure_name(run.record)  # the card's key figure, for the index's thumbnail
        if figure and (run.path / "figures" / f"{figure}.png").is_file():
            shutil.copy2(run.path / "figures" / f"{figure}.png", dest / f"{figure}.png")
    index_page.write_published_index(root)
    return target


def newest_publishable(candidates: Sequence[RunRecord], *, profile: str = "cpu") -> dict[str, RunRecord]:
    """Study -> its newest successful, non-rehearsal ``profile`` run among ``candidates`` (newest
    first, as :func:`collect_runs` gives them): what ``publish`` and ``epi costs`` read."""
    chosen: dict[str, RunRecord] = {}
    for run in candidates:
        if run.study not in chosen and _publishable(run, profile):
            chosen[run.study] = run
    return chosen


def _is_rehearsal(run: RunRecord) -> bool:
    return bool((run.record.get("parameters") or {}).get("rehearse"))


def _publishable(run: RunRecord, profile: str) -> bool:
    """A successful run of ``profile`` that is not a GPU rehearsal (rehearsals are never published)."""
    return run.status == STATUS_SUCCESS and run.profile == profile and not _is_rehearsal(run)
