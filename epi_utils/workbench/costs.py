"""Where a study's time goes: the top costs of each study's newest run, as a table (issue 34).

Every study's ``Result.timings()`` is stored in its run folder's ``results.json``; the shapes
differ by study (seconds per run as a list, per arm as ``seconds/<arm>``, per world and stage as
``seed<k>_<stage>``, ...). :func:`cost_parts` folds one run's timings into named, additive parts:

- totals and means (``total``, ``wall``, ``run_study``, ``kernel_cpu``, ``*_mean``) are dropped:
  they are not parts;
- a list of seconds (one per run) is summed;
- unit prefixes (``seed<k>_``, ``setting<k>_``) and the ``seconds/`` / ``study_`` prefixes and
  ``_s`` / ``_seconds`` suffixes are stripped, so the same stage of every world sums into one part.

Parts measured in parallel workers add up to more than the wall time; the table shows both. The
pretraining of ``tiny`` world models (on a fresh clone) happens inside the parts; its total is
read from the run's ``progress.log`` lines written by :func:`epi_utils.lm.models.load_model`.

``epi costs [--out REPORTS] [--profile cpu] [--top 4]`` prints the table as Markdown (the
README's "Where the time goes" table is this output from a fresh-clone ``make reports``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

_NOT_PARTS = re.compile(r"(^|[/_])(total|wall|run_study|kernel_cpu)(_s|_seconds)?$|mean$")
_UNIT_PREFIX = re.compile(r"^((setting|seed)\d+_)+")
_PRETRAIN_LINE = re.compile(r"^pretrained a tiny world model .* in ([0-9.]+) s")  # progress.pretrain_log_line
_LIST_NAMES = {"seconds_per_run": "runs", "statistics_seconds_per_run": "statistics per run"}


def _part_name(key: str) -> str:
    name = _LIST_NAMES.get(key, key)
    name = _UNIT_PREFIX.sub("", name)
    for prefix in ("seconds/", "study_"):
        name = name[len(prefix):] if name.startswith(prefix) else name
    for suffix in ("_seconds", "_s"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return name.replace("_", " ")


def cost_parts(timings: Mapping[str, Any]) -> dict[str, float]:
    """Additive seconds per named part of one run's ``timings`` (module docstring), largest first.

    >>> cost_parts({"seed0_sft": 30.0, "seed1_sft": 20.0, "seed0_probe": 1.0, "total": 51.0})
    {'sft': 50.0, 'probe': 1.0}
    """
    parts: dict[str, float] = {}
    for key, value in timings.items():
        if _NOT_PARTS.search(key):
            continue
        if isinstance(value, (list, tuple)):
            seconds = float(sum(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            raise ValueError(f"timings[{key!r}]: expected seconds or a list of seconds, got {value!r}")
        name = _part_name(key)
        parts[name] = parts.get(name, 0.0) + seconds
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def pretrain_seconds(progress_log: Path) -> tuple[int, float]:
    """``(models, seconds)`` of the tiny world models pretrained during a run (its progress.log)."""
    if not progress_log.is_file():
        return 0, 0.0
    found = [float(m.group(1)) for line in progress_log.read_text(encoding="utf-8").splitlines()
             if (m := _PRETRAIN_LINE.match(line))]
    return len(found), float(sum(found))


def run_costs(run_dir: Path | str, *, top: int = 4) -> dict[str, Any]:
    """One run's wall time, its ``top`` parts and its pretraining, from ``metrics.json``,
    ``results.json`` and ``progress.log`` of ``run_dir``."""
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
        results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{run_dir}: cannot read the run's metrics.json / results.json ({exc})") from None
    parts = cost_parts(results.get("timings") or {})
    summed = sum(parts.values())
    n_models, pre = pretrain_seconds(run_dir / "progress.log")
    return {"study": record.get("study") or run_dir.parent.name, "run_id": run_dir.name,
            "wall_s": float(record.get("wall_time_s") or float("nan")), "parts_s": summed,
            "top": [(name, s, s / summed if summed else float("nan")) for name, s in list(parts.items())[:top]],
            "pretrained_models": n_models, "pretrain_s": pre}


def costs_table(run_dirs, *, top: int = 4) -> pd.DataFrame:
    """One row per study: wall minutes, the summed parts in minutes, the top parts (name, minutes,
    share of the summed parts) and the pretraining inside them."""
    rows = []
    for run_dir in run_dirs:
        c = run_costs(run_dir, top=top)
        tops = "; ".join(f"{name} {s / 60:.1f} ({share:.0%})" for name, s, share in c["top"]) or "(no timings)"
        pre = f"{c['pretrained_models']} models, {c['pretrain_s'] / 60:.1f}" if c["pretrained_models"] else "none"
        rows.append({"study": c["study"], "run": c["run_id"], "wall (min)": round(c["wall_s"] / 60, 1),
                     "parts summed (min)": round(c["parts_s"] / 60, 1),
                     "top costs (min, share of the parts)": tops, "pretraining inside (min)": pre})
    return pd.DataFrame(rows)


def newest_runs(reports_dir: Path | str, *, profile: str = "cpu") -> list[Path]:
    """The newest successful, non-rehearsal ``profile`` run folder of each study under ``reports_dir``."""
    from epi_utils.workbench.report import collect_runs, newest_publishable

    chosen = newest_publishable(collect_runs(reports_dir), profile=profile)
    if not chosen:
        raise FileNotFoundError(f"no successful '{profile}' run under {reports_dir}; run `make reports` first")
    return [chosen[s].path for s in sorted(chosen)]


def markdown(frame: pd.DataFrame) -> str:
    """The table as GitHub Markdown (no index)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
