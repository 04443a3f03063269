"""Sweeps: run a notebook over a cartesian grid of parameters and summarise over seeds.

``epi sweep NB -p seed 0,1,2 -p isolation_ratio 0.02,0.05`` runs 6 runs (``--jobs`` at a time, in
local worker processes or on a Ray or SLURM cluster: :mod:`epi_utils.workbench.executors`), then writes ``<reports>/<study>/_sweeps/<sweep-id>/summary.csv`` and ``summary.html``: for each
combination of the non-seed parameters and each numeric headline in the runs' ``metrics.json``,
the mean over seeds and its 95% Student-t interval over seeds (:func:`epi_utils.workbench.stats.interval`;
a bootstrap over a few seeds under-covers). Timings are provenance, not metrics, and are not
summarised. Failed runs are listed and left out of the statistics.
"""
from __future__ import annotations

import contextlib
import html
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from epi_utils.workbench import runs
from epi_utils.workbench.executors import BACKENDS, DONE, Tasks, check_workers
from epi_utils.workbench.index_page import PAGE_STYLE, flatten_metrics
from epi_utils.workbench.params import profiles_dir, resolve_parameters, study_name
from epi_utils.workbench.progress import progress_line
from epi_utils.workbench.report import default_reports_dir, run_notebook, write_index
from epi_utils.workbench.stats import interval


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``{name: [values]}`` as a list of ``{name: value}`` (in input order)."""
    names = list(grid)
    for name in names:
        if len(grid[name]) == 0:
            raise ValueError(f"sweep parameter {name!r} has no values")
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep: every unfinished run is marked ``interrupted``, remote tasks
    are cancelled, the summary of what finished is written and the index refreshed; ``runs`` lists
    the run folders that were started and did not finish, ``cancelled`` the remote tasks cancelled."""

    def __init__(self, out: str, run_dirs: Sequence[Path], cancelled: int = 0):
        super().__init__(out)
        self.out, self.runs, self.cancelled = out, list(run_dirs), cancelled


def _materialize(point: Mapping[str, Any], tmp: Path) -> tuple[Path, bool]:
    """The notebook a remote task runs: the submitter's path when this machine has the same file
    (a shared filesystem, a local Ray cluster), else a copy (with its profiles) written under ``tmp``."""
    import hashlib

    original = Path(point["notebook"])
    shipped = point.get("shipped")
    if shipped is None:
        return original, False
    if original.is_file() and hashlib.sha256(original.read_bytes()).hexdigest() == shipped["sha256"]:
        profiles = original.parent / "params" / original.stem
        if all((profiles / name).is_file() and (profiles / name).read_text(encoding="utf-8") == text
               for name, text in shipped["profiles"].items()):
            return original, False
    nb = tmp / "notebooks" / original.name
    (nb.parent / "params" / original.stem).mkdir(parents=True)
    nb.write_bytes(shipped["bytes"])
    for name, text in shipped["profiles"].items():
        (nb.parent / "params" / original.stem / name).write_text(text, encoding="utf-8")
    return nb, True


def _one_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """Run one grid point (in this process, a local worker or a remote task).

    In place (local, or a shared filesystem): ``{"run_dir": path}``. Shipped (a remote task without a
    shared filesystem): the run goes into a temporary reports folder here and its whole folder
    (metrics.json, report.html, notebook, figures) comes back as a tar archive ``{"archive": bytes}``.
    A Ctrl-C or a cancellation raises ``KeyboardInterrupt`` after the run is marked interrupted."""
    import tempfile

    kwargs = dict(profile=point["profile"], overrides=point["overrides"], run_id=point["run_id"],
                  refresh_index=False, progress=False)
    if point.get("shipped") is None:
        return {"run_dir": str(run_notebook(point["notebook"], reports_dir=point["reports_dir"], **kwargs))}
    import io
    import tarfile

    with tempfile.TemporaryDirectory(prefix="epi-sweep-") as tmp:
        nb, copied = _materialize(point, Path(tmp))
        run_dir = run_notebook(nb, reports_dir=Path(tmp) / "reports", **kwargs)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(run_dir, arcname=".")
        return {"archive": buffer.getvalue(), "copied": copied}


def _receive(value: Mapping[str, Any], point: Mapping[str, Any], reports_dir: Path, study: str) -> Path:
    """Where a finished point's run folder is on this machine: in place, or unpacked from its archive
    into ``<reports>/<study>/<run-id>/`` as a local run would have written it."""
    import io
    import shutil
    import tarfile

    if "run_dir" in value:
        return Path(value["run_dir"])
    dest = reports_dir / study / point["run_id"]
    if dest.exists():
        raise FileExistsError(f"run folder already exists: {dest}")
    incoming = dest.with_name(f".incoming-{dest.name}")
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(value["archive"]), mode="r:gz") as tar:
        tar.extractall(incoming, filter="data")
    if value.get("copied"):  # the remote ran a copy of this notebook: record the submitter's name of it
        record = json.loads((incoming / "metrics.json").read_text())
        record["notebook"] = point["notebook_name"]
        runs.atomic_write_json(incoming / "metrics.json", record)
    incoming.rename(dest)
    return dest


def _stop(points: Sequence[Mapping[str, Any]], reports_dir: Path, study: str, sweep_id: str, *,
          finished: Sequence[Path], failures: Sequence[dict], cancelled: Sequence[int],
          sweep_keys: Sequence[str]) -> SweepInterrupted:
    """Mark every started, unfinished run of the sweep ``interrupted``, summarise what finished,
    refresh the index."""
    started = []
    finished_set = {Path(d) for d in finished}
    for point in points:
        run_dir = reports_dir / study / point["run_id"]
        if run_dir.is_dir() and run_dir not in finished_set:
            runs.mark_interrupted(run_dir)
            if not any(run_dir.iterdir()):
                run_dir.rmdir()
            else:
                started.append(run_dir)
    failures = [*failures, *({"run": points[i]["run_id"], "status": "cancelled", "parameters": points[i]["overrides"]}
                             for i in cancelled)]
    if finished or started or failures:
        summarize_runs([*finished, *started], out_dir=reports_dir / study / "_sweeps" / sweep_id,
                       sweep_keys=sweep_keys, failures=failures)
    write_index(reports_dir)
    remote = f", {len(cancelled)} remote task(s) cancelled" if cancelled else ""
    return SweepInterrupted(f"sweep {sweep_id} ({len(started)} run(s) started{remote})", started, len(cancelled))


class _PointsDone:
    """One terminal line per finished grid point: points done (and failed) of total, elapsed time, ETA."""

    def __init__(self, sweep_id: str, total: int, *, where: str = ""):
        self.sweep_id, self.total, self.done, self.failed, self.start = sweep_id, total, 0, 0, time.time()
        self.where = where

    def tick(self, *, failed: bool = False) -> None:
        self.done += 1
        self.failed += bool(failed)
        unit = "points done" + (f", {self.failed} failed" if self.failed else "")
        print(progress_line(f"sweep {self.sweep_id}{self.where}", done=self.done, total=self.total,
                            elapsed=time.time() - self.start, unit=unit), file=sys.stderr, flush=True)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a sweep runs, SIGTERM (``kill``, a batch scheduler's stop) is a Ctrl-C: the workers are
    stopped, their runs marked interrupted and what finished is summarised."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_status(run_dir: Path) -> str:
    try:
        return json.loads((Path(run_dir) / "metrics.json").read_text()).get("status", "unknown")
    except (OSError, ValueError):
        return "unreadable"


def sweep(nb_path: Path | str, *, grid: Mapping[str, Sequence[Any]], profile: str = "cpu", jobs: int = 1,
          reports_dir: Path | str | None = None, sweep_id: str | None = None, executor: str = "local",
          shared_fs: bool = False, **executor_options) -> Path:
    """Run every grid point (validated first), then summarise; returns the summary folder.

    ``jobs`` points run at a time on ``executor`` (``local`` processes, ``ray`` or ``slurm``; its
    options as in :mod:`epi_utils.workbench.executors`, e.g. ``address=``, ``partition=``,
    ``time=``, ``gpus=``). On ``ray``/``slurm`` each point's run folder comes back to this machine
    and is written under ``reports_dir`` as a local run's would be; ``shared_fs=True`` lets the
    remote tasks write into ``reports_dir`` directly. A point that failed (its notebook raised, its
    kernel or worker died, its task was cancelled) is counted in the progress lines and listed in
    the summary. Ctrl-C or SIGTERM cancels the rest (:class:`SweepInterrupted`).
    """
    check_workers(jobs, what="jobs (--jobs)")
    if executor not in BACKENDS:
        raise ValueError(f"executor must be one of {BACKENDS} (got {executor!r})")
    nb_path = Path(nb_path).resolve()
    points = expand_grid(grid)
    if sweep_id is not None:
        runs.check_name(sweep_id, what="sweep id")
    for point in points:  # reject bad names/types/devices before anything runs
        runs.check_run_request(profile=profile, overrides=point, run_id=None)
        runs.preflight(resolve_parameters(nb_path, profile=profile, overrides=point))
    reports_dir = (Path(reports_dir) if reports_dir is not None else default_reports_dir()).resolve()
    sweep_id = sweep_id or runs.new_run_id(profile=profile)
    study = study_name(nb_path)
    sweep_keys = [k for k in grid if k != "seed"]
    shipped = None
    if executor != "local" and not shared_fs:
        import hashlib

        raw = nb_path.read_bytes()
        profile_dir = profiles_dir(nb_path)
        shipped = {"bytes": raw, "sha256": hashlib.sha256(raw).hexdigest(),
                   "profiles": {p.name: p.read_text(encoding="utf-8") for p in sorted(profile_dir.glob("*.yaml"))}}
    notebook_name = str(nb_path.relative_to(runs.repo_root()) if nb_path.is_relative_to(runs.repo_root()) else nb_path)
    tasks = [{"notebook": str(nb_path), "notebook_name": notebook_name, "profile": profile, "overrides": point,
              "reports_dir": str(reports_dir), "run_id": f"{sweep_id}-{i:03d}", "shipped": shipped}
             for i, point in enumerate(points)]
    counter = _PointsDone(sweep_id, len(tasks), where="" if executor == "local" else f" on {executor}")
    run_dirs: list[Path] = []
    failures: list[dict] = []
    running = None
    try:
        with _sigterm_as_interrupt():
            with Tasks(_one_point, tasks, executor=executor, workers=min(jobs, len(tasks)), threads=1,
                       **executor_options) as running:
                for outcome in running:
                    point = tasks[outcome.index]
                    if outcome.status == DONE:
                        run_dir = _receive(outcome.value, point, reports_dir, study)
                        run_dirs.append(run_dir)
                        counter.tick(failed=_run_status(run_dir) != "success")
                        continue
                    local_dir = reports_dir / study / point["run_id"]
                    if local_dir.is_dir():  # a local worker died mid-run: its run says "running"
                        runs.mark_interrupted(local_dir)
                        run_dirs.append(local_dir)
                    failures.append({"run": point["run_id"], "status": outcome.status, "parameters": point["overrides"],
                                     "error": str(outcome.failure) if outcome.failure else outcome.status})
                    counter.tick(failed=True)
    except KeyboardInterrupt:
        cancelled = []
        if running is not None and running.remote:
            cancelled = [i for i, o in enumerate(running.outcomes) if o is None]
        raise _stop(tasks, reports_dir, study, sweep_id, finished=run_dirs, failures=failures, cancelled=cancelled,
                    sweep_keys=sweep_keys) from None
    order = {point["run_id"]: i for i, point in enumerate(tasks)}
    run_dirs.sort(key=lambda d: order.get(Path(d).name, len(order)))
    out = reports_dir / study / "_sweeps" / sweep_id
    summarize_runs(run_dirs, out_dir=out, sweep_keys=sweep_keys, failures=failures)
    write_index(reports_dir)
    return out


def summarize_runs(run_dirs: Sequence[Path], *, out_dir: Path, sweep_keys: Sequence[str] = (),
                   failures: Sequence[Mapping[str, Any]] = ()):
    """Mean and 95% t-interval over seeds of every numeric headline, per sweep-key combination.

    Writes ``summary.csv``, ``summary.html`` and ``runs.json`` into ``out_dir``; returns the
    summary ``pandas.DataFrame`` (columns: sweep keys, metric, mean, ci_low, ci_high, n_seeds).
    ``n_seeds`` counts the distinct seeds of a combination's successful runs (a run without a
    ``seed`` parameter counts as one); below 2 seeds there is no interval (``ci_low``/``ci_high``
    empty), never a degenerate one equal to the mean. ``failures``: points that left no run
    folder (a task that failed or was cancelled), listed in ``runs.json`` and the page.
    """
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, listing = [], []
    for run_dir in run_dirs:
        rec = json.loads((Path(run_dir) / "metrics.json").read_text())
        entry = {"run": str(run_dir), "status": rec.get("status"), "parameters": rec.get("parameters")}
        if rec.get("status") != "success" and isinstance(rec.get("error"), dict):
            entry["error"] = rec["error"].get("message")
        listing.append(entry)
        if rec.get("status") != "success":
            continue
        params = rec.get("parameters", {})
        key = {k: json.dumps(params.get(k)) if isinstance(params.get(k), list) else params.get(k) for k in sweep_keys}
        seed = rec.get("seed", params.get("seed"))
        for metric, value in flatten_metrics(rec.get("metrics", {})).items():
            rows.append({**key, "seed": json.dumps(seed), "metric": metric, "value": value})
    listing.extend(dict(f) for f in failures)
    runs.atomic_write_json(out_dir / "runs.json", listing)
    columns = [*sweep_keys, "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    if not rows:
        summary = pd.DataFrame(columns=columns)
    else:
        frame = pd.DataFrame(rows)
        records = []
        for key, sub in frame.groupby([*sweep_keys, "metric"], sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            per_seed = sub.groupby("seed", sort=False)["value"].mean()  # one value per seed
            iv = interval(per_seed.to_numpy(), unit="seeds", method="t")
            low, high = (iv.low, iv.high) if iv.n >= 2 else (float("nan"), float("nan"))
            records.append({**dict(zip([*sweep_keys, "metric"], key)), "mean": iv.mean,
                            "ci_low": low, "ci_high": high, "n_seeds": int(per_seed.size)})
        summary = pd.DataFrame(records, columns=columns)
    summary.to_csv(out_dir / "summary.csv", index=False)
    failed = [r for r in listing if r["status"] != "success"]
    failed_html = ("<h2>Failed runs (left out)</h2><ul>" + "".join(
        f"<li>{html.escape(str(r['run']))}: {html.escape(str(r['status']))}"
        + (f" ({html.escape(str(r['error'])[:300])})" if r.get("error") else "") + "</li>" for r in failed)
        + "</ul>") if failed else ""
    single = (" A combination with one seed has no interval (sweep over <code>seed</code> for one)."
              if len(summary) and (summary["n_seeds"] < 2).any() else "")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>sweep summary</title>" + PAGE_STYLE +
            f"</head><body><h1>Sweep {html.escape(out_dir.name)}</h1><p>{len(listing)} runs, {len(failed)} failed. "
            "Mean over seeds with its 95% Student-t interval over seeds." + single + "</p>"
            + summary.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="") + failed_html + "</body></html>")
    (out_dir / "summary.html").write_text(page, encoding="utf-8")
    return summary
