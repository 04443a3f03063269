"""Sweeps: run a notebook over a cartesian grid of parameters and summarise over seeds.

``epi sweep NB -p seed 0,1,2 -p isolation_ratio 0.02,0.05`` runs 6 runs in worker processes,
then writes ``<reports>/<study>/_sweeps/<sweep-id>/summary.csv`` and ``summary.html``: for each
combination of the non-seed parameters and each numeric headline in the runs' ``metrics.json``,
the mean over seeds and its 95% Student-t interval over seeds (:func:`epi_utils.workbench.stats.interval`;
a bootstrap over a few seeds under-covers). Timings are provenance, not metrics, and are not
summarised. Failed runs are listed and left out of the statistics.
"""
from __future__ import annotations

import html
import itertools
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping, Sequence

from epi_utils.workbench import runs
from epi_utils.workbench.params import resolve_parameters, study_name
from epi_utils.workbench.progress import progress_line
from epi_utils.workbench.report import PAGE_STYLE, default_reports_dir, flatten_metrics, run_notebook, write_index
from epi_utils.workbench.stats import interval


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``{name: [values]}`` as a list of ``{name: value}`` (in input order)."""
    names = list(grid)
    for name in names:
        if len(grid[name]) == 0:
            raise ValueError(f"sweep parameter {name!r} has no values")
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: every unfinished run is marked ``interrupted`` and the index refreshed;
    ``runs`` lists the run folders that were started."""

    def __init__(self, out: str, run_dirs: Sequence[Path]):
        super().__init__(out)
        self.out, self.runs = out, list(run_dirs)


_STOP = None  # a worker's copy of the sweep's stop event (set by the parent on Ctrl-C)


def _one_run(args: tuple) -> str:
    import signal

    nb_path, profile, overrides, reports_dir, run_id = args
    if _STOP is not None and _STOP.is_set():
        return ""  # queued before the Ctrl-C: never started, leaves no folder
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a running run reacts to Ctrl-C ...
    try:
        run_dir = run_notebook(nb_path, profile=profile, overrides=overrides, reports_dir=reports_dir,
                               run_id=run_id, refresh_index=False, progress=False)
    except KeyboardInterrupt as exc:  # marked interrupted by run_notebook; the parent reports it
        return str(getattr(exc, "run_dir", ""))
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ... an idle worker does not (no traceback)
    return str(run_dir)


def _worker_init(stop) -> None:
    """Worker start-up: an idle worker ignores Ctrl-C (no traceback from the pool's loop) and
    starts no queued run once ``stop`` is set."""
    import signal

    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(tasks: Sequence[tuple], reports_dir: Path, study: str, sweep_id: str) -> SweepInterrupted:
    """Mark every started, unfinished run of the sweep ``interrupted``, refresh the index."""
    started = []
    for task in tasks:
        run_dir = reports_dir / study / task[4]
        if run_dir.is_dir():
            runs.mark_interrupted(run_dir)
            if not any(run_dir.iterdir()):
                run_dir.rmdir()
            else:
                started.append(run_dir)
    write_index(reports_dir)
    return SweepInterrupted(f"sweep {sweep_id} ({len(started)} run(s) started)", started)


class _PointsDone:
    """One terminal line per finished grid point: points done of total, elapsed time, ETA."""

    def __init__(self, sweep_id: str, total: int):
        self.sweep_id, self.total, self.done, self.start = sweep_id, total, 0, time.time()

    def tick(self) -> None:
        self.done += 1
        print(progress_line(f"sweep {self.sweep_id}", done=self.done, total=self.total,
                            elapsed=time.time() - self.start, unit="points done"), file=sys.stderr, flush=True)


def sweep(nb_path: Path | str, *, grid: Mapping[str, Sequence[Any]], profile: str = "cpu", jobs: int = 1,
          reports_dir: Path | str | None = None, sweep_id: str | None = None) -> Path:
    """Run every grid point (validated first), then summarise; returns the summary folder."""
    nb_path = Path(nb_path).resolve()
    points = expand_grid(grid)
    if sweep_id is not None:
        runs.check_name(sweep_id, what="sweep id")
    for point in points:  # reject bad names/types/devices before anything runs
        runs.check_run_request(profile=profile, overrides=point, run_id=None)
        runs.preflight(resolve_parameters(nb_path, profile=profile, overrides=point))
    reports_dir = Path(reports_dir) if reports_dir is not None else default_reports_dir()
    sweep_id = sweep_id or runs.new_run_id(profile=profile)
    tasks = [(str(nb_path), profile, point, str(reports_dir), f"{sweep_id}-{i:03d}") for i, point in enumerate(points)]
    study = study_name(nb_path)
    try:
        counter = _PointsDone(sweep_id, len(tasks))
        if jobs <= 1:
            run_dirs = []
            for t in tasks:
                run_dirs.append(run_notebook(t[0], profile=profile, overrides=t[2], reports_dir=t[3], run_id=t[4],
                                             refresh_index=False, progress=False))
                counter.tick()
        else:
            ctx = mp.get_context("spawn")
            stop = ctx.Event()
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(stop,))
            try:
                futures = [pool.submit(_one_run, t) for t in tasks]
                for _ in as_completed(futures):
                    counter.tick()
                run_dirs = [f.result() for f in futures]
            except KeyboardInterrupt:
                import os
                import signal

                stop.set()
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    try:  # a Ctrl-C sent to this process only reaches the workers this way
                        os.kill(proc.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                pool.shutdown(wait=True, cancel_futures=True)  # workers mark their runs and stop their kernels
                raise
            pool.shutdown(wait=True)
    except KeyboardInterrupt:
        raise _stop(tasks, reports_dir, study, sweep_id) from None
    out = reports_dir / study_name(nb_path) / "_sweeps" / sweep_id
    summarize_runs([Path(d) for d in run_dirs], out_dir=out, sweep_keys=[k for k in grid if k != "seed"])
    write_index(reports_dir)
    return out


def summarize_runs(run_dirs: Sequence[Path], *, out_dir: Path, sweep_keys: Sequence[str] = ()):
    """Mean and 95% t-interval over seeds of every numeric headline, per sweep-key combination.

    Writes ``summary.csv``, ``summary.html`` and ``runs.json`` into ``out_dir``; returns the
    summary ``pandas.DataFrame`` (columns: sweep keys, metric, mean, ci_low, ci_high, n_seeds).
    """
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, listing = [], []
    for run_dir in run_dirs:
        rec = json.loads((Path(run_dir) / "metrics.json").read_text())
        listing.append({"run": str(run_dir), "status": rec.get("status"), "parameters": rec.get("parameters")})
        if rec.get("status") != "success":
            continue
        params = rec.get("parameters", {})
        key = {k: json.dumps(params.get(k)) if isinstance(params.get(k), list) else params.get(k) for k in sweep_keys}
        for metric, value in flatten_metrics(rec.get("metrics", {})).items():
            rows.append({**key, "seed": params.get("seed"), "metric": metric, "value": value})
    runs.atomic_write_json(out_dir / "runs.json", listing)
    columns = [*sweep_keys, "metric", "mean", "ci_low", "ci_high", "n_seeds"]
    if not rows:
        summary = pd.DataFrame(columns=columns)
    else:
        frame = pd.DataFrame(rows)
        records = []
        for key, sub in frame.groupby([*sweep_keys, "metric"], sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            iv = interval(sub["value"].to_numpy(), unit="seeds", method="t")
            records.append({**dict(zip([*sweep_keys, "metric"], key)), "mean": iv.mean,
                            "ci_low": iv.low, "ci_high": iv.high, "n_seeds": int(sub["seed"].nunique())})
        summary = pd.DataFrame(records, columns=columns)
    summary.to_csv(out_dir / "summary.csv", index=False)
    failed = [r for r in listing if r["status"] != "success"]
    failed_html = ("<h2>Failed runs (left out)</h2><ul>" + "".join(f"<li>{html.escape(r['run'])}: {r['status']}</li>"
                                                                    for r in failed) + "</ul>") if failed else ""
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>sweep summary</title>" + PAGE_STYLE +
            f"</head><body><h1>Sweep {html.escape(out_dir.name)}</h1><p>{len(listing)} runs, {len(failed)} failed. "
            "Mean over seeds with its 95% Student-t interval over seeds.</p>"
            + summary.to_html(index=False, float_format=lambda v: f"{v:.4g}") + failed_html + "</body></html>")
    (out_dir / "summary.html").write_text(page, encoding="utf-8")
    return summary
