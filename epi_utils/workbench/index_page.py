"""The two index pages: the local index of runs and the published results page.

- :func:`write_index`: ``reports/index.html``, every run on disk grouped by study (newest first),
  with its status, profile, wall time, its answer (the result card's sentence, when the study wrote
  one) and its headline numbers named for a reader.
- :func:`write_published_index`: ``reports/published/index.html``, a results page: per study the
  question in one line, the answer as one sentence (both from the run's result card,
  :mod:`epi_utils.workbench.cards`, built from verdict data by the study), 3-5 headline numbers with
  units and intervals, a thumbnail of the key figure and links; then the other published profiles
  (``cpu-long`` grids, parts of grids), each with the same cards.

A run without a card (an older run, a toy notebook) falls back to its declared headline metrics,
named for a reader (``arms.full_sft.forgetting0`` -> ``arms · full sft · forgetting0``) and rounded
to what their interval supports (:func:`epi_utils.workbench.tables.format_interval`).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from epi_utils.workbench import runs
from epi_utils.workbench.cards import Card
from epi_utils.workbench.tables import format_interval, format_value, humanize

#: metrics entries that are not results (the config echo, the card itself, the config table)
NOT_RESULTS = ("config", "card", "config_table", "rehearsal")

#: the look of a result card (the index's and the top of each report)
CARD_STYLE = ("<style>section.card{border:1px solid #ccc;border-radius:6px;padding:0 16px 12px;margin:16px 0;"
              "overflow:auto}section.card h2{margin:12px 0 4px}p.question{color:#444;font-style:italic;margin:4px 0}"
              "p.answer{font-size:16px;margin:8px 0}img.thumb{float:right;margin:0 0 8px 16px;border:1px solid #ddd}"
              "p.meta{color:#666;font-size:13px}table.headlines{border-collapse:collapse}"
              "table.headlines td,table.headlines th{border:1px solid #ccc;padding:4px 8px;font-size:14px;"
              "text-align:left}table.headlines th{background:#eee}</style>")
PAGE_STYLE = ("<style>body{font-family:sans-serif;margin:2em;max-width:1200px;line-height:1.4}"
              "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;"
              "font-size:14px}th{background:#eee;text-align:left}.success{color:#1b7837}"
              ".failed,.interrupted{color:#b2182b}.running{color:#8c510a}</style>" + CARD_STYLE)


def study_title(study: str) -> str:
    """``"02_epi_vs_static"`` -> ``"02 · epi vs static"``."""
    number, _, rest = study.partition("_")
    return f"{number} · {humanize(rest)}" if number.isdigit() and rest else humanize(study)


def _intervals(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[float, float]]:
    """``{flat name: (low, high)}`` for every metric stored as ``<m>_ci95`` or ``<m>_low``/``<m>_high``."""
    out: dict[str, tuple[float, float]] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_intervals(value, prefix=f"{name}."))
        elif key.endswith("_ci95") and isinstance(value, (list, tuple)) and len(value) == 2:
            try:
                out[name[: -len("_ci95")]] = (float(value[0]), float(value[1]))
            except (TypeError, ValueError):
                pass
        elif key.endswith("_low") and f"{key[:-4]}_high" in metrics:  # the contract's naming: <m>_low/<m>_high
            try:
                out[name[:-4]] = (float(value), float(metrics[f"{key[:-4]}_high"]))
            except (TypeError, ValueError):
                pass
    return out


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as ``{"a.b.c": value}``; CI pairs, lists and the entries
    that are not results (:data:`NOT_RESULTS`) are skipped."""
    results = {k: v for k, v in metrics.items() if k not in NOT_RESULTS} if not prefix else metrics
    return {name: float(value) for name, value in runs.flatten_leaves(results, prefix=prefix).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def reader_name(key: str) -> str:
    """A dotted metrics key for a reader: ``"arms.full_sft.forgetting0"`` -> ``"arms · full sft · forgetting0"``."""
    return " · ".join(humanize(part) for part in key.split("."))


def headline_pairs(metrics: Mapping[str, Any], headlines: Sequence[str] = (), *, limit: int = 5) -> list[tuple[str, str]]:
    """``[(reader name, value text), ...]``: the declared headline metrics (the first ``limit``
    numeric results for a run that declared none), each with its interval where one is recorded,
    rounded to what the interval supports."""
    flat = flatten_metrics(metrics)
    intervals = _intervals(metrics)
    names = [h for h in headlines if h in flat][:limit] or list(flat)[:limit]
    out = []
    for name in names:
        ci = intervals.get(name)
        value = flat[name]
        text = format_interval(value, *ci) if ci else format_value(value)
        out.append((reader_name(name), text))
    return out


def _card(metrics: Mapping[str, Any]) -> Card | None:
    data = metrics.get("card") if isinstance(metrics, Mapping) else None
    if not isinstance(data, Mapping):
        return None
    try:
        return Card.from_dict(data)
    except (KeyError, TypeError, ValueError):  # a malformed card falls back to the headline list
        return None


def _headline_table(pairs: Sequence[tuple[str, str, str, str]]) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(n)}</td><td>{esc(v)}</td><td>{esc(u)}</td><td>{esc(o)}</td></tr>"
                   for n, v, u, o in pairs)
    return ("<table class='headlines'><tr><th>number</th><th>value [95% interval]</th><th>unit</th>"
            f"<th>interval over</th></tr>{rows}</table>")


def card_block(record: Mapping[str, Any], *, title: str, report_href: str | None = None,
               figure_src: str | None = None, meta: str = "") -> str:
    """A study's results card as an HTML ``<section>``: title (linked), question, answer, headline
    table, thumbnail; a run without a card shows its declared headlines named for a reader."""
    esc = html.escape
    metrics = record.get("metrics") or {}
    card = _card(metrics)
    head = f"<a href='{esc(report_href)}'>{esc(title)}</a>" if report_href else esc(title)
    thumb = (f"<a href='{esc(report_href or figure_src)}'><img class='thumb' src='{esc(figure_src)}' "
             f"alt='{esc((card.figure if card else None) or title)}' width='300'></a>" if figure_src else "")
    if card is not None:
        body = (f"<p class='question'>{esc(card.question)}</p>\n<p class='answer'>{esc(card.answer)}</p>\n"
                + _headline_table([(h.name, h.value_text(), h.unit, h.over) for h in card.headlines]))
    else:
        pairs = headline_pairs(metrics, record.get("headlines") or ())
        body = ("<p class='question'>This run wrote no result card; its declared headline numbers:</p>\n"
                + _headline_table([(n, v, "", "") for n, v in pairs]))
    meta_html = f"<p class='meta'>{meta}</p>" if meta else ""
    return f"<section class='card'>\n<h2>{head}</h2>\n{thumb}{body}\n{meta_html}</section>"


def key_figure_name(record: Mapping[str, Any]) -> str | None:
    """The key figure the run's card names (a ``plots.save_figure`` name), or None."""
    card = _card(record.get("metrics") or {})
    return card.figure if card is not None else None


def _links(rel: str, folder: Path) -> str:
    links = []
    if (folder / "report.html").exists():
        links.append(f"<a href='{rel}/report.html'>report</a>")
    links.append(f"<a href='{rel}/metrics.json'>metrics.json</a>")
    if (folder / "notebook.ipynb").exists():
        links.append(f"<a href='{rel}/notebook.ipynb'>notebook</a>")
    return " · ".join(links)


def write_index(reports_dir: Path | str, runs_found: Sequence[Any]) -> Path:
    """Rebuild ``<reports>/index.html``: the runs (``report.collect_runs``, newest first) grouped by
    study, each with status, profile, wall time, its answer and headline numbers, and links."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    by_study: dict[str, list[Any]] = {}
    for run in runs_found:
        by_study.setdefault(run.study, []).append(run)
    sections = []
    for study in sorted(by_study):
        rows = []
        for run in by_study[study]:  # newest first, as collected
            rel = run.path.relative_to(reports_dir).as_posix()
            err = run.record.get("error", {}).get("message", "") if isinstance(run.record.get("error"), dict) else ""
            card = _card(run.metrics)
            answer = html.escape(card.answer) if card else "<br>".join(
                f"{html.escape(n)}: {html.escape(v)}" for n, v in headline_pairs(run.metrics, run.record.get("headlines") or ()))
            rehearsal = " (rehearsal)" if (run.record.get("parameters") or {}).get("rehearse") else ""
            rows.append(f"<tr><td>{html.escape(run.run_id)}</td><td class='{run.status}'>{run.status}"
                        f"{'<br><small>' + html.escape(err[:200]) + '</small>' if err else ''}</td>"
                        f"<td>{html.escape(str(run.profile))}{rehearsal}</td><td>{run.record.get('wall_time_s', '')}</td>"
                        f"<td>{answer}</td><td>{_links(rel, run.path)}</td></tr>")
        sections.append(f"<h2>{html.escape(study_title(study))}</h2><table><tr><th>run</th><th>status</th>"
                        "<th>profile</th><th>wall s</th><th>answer / headline numbers</th><th>links</th></tr>"
                        + "".join(rows) + "</table>")
    sweeps = sorted(reports_dir.glob("*/_sweeps/*/summary.html"), reverse=True)
    sweep_html = "".join(f"<li><a href='{p.relative_to(reports_dir).as_posix()}'>{html.escape(p.parent.parent.parent.name)}"
                         f" / {html.escape(p.parent.name)}</a></li>" for p in sweeps)
    published = (reports_dir / "published" / "index.html").exists()
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>epi reports</title>" + PAGE_STYLE +
            "</head><body><h1>Reports</h1>"
            + ("<p><a href='published/index.html'>Published results (committed)</a></p>" if published else "")
            + "<p>Runs on this machine, grouped by study, newest first.</p>"
            + ("".join(sections) or "<p>No runs yet: <code>make reports</code> or <code>epi run</code>.</p>")
            + (f"<h2>Sweeps</h2><ul>{sweep_html}</ul>" if sweep_html else "") + "</body></html>")
    return runs.atomic_write_text(reports_dir / "index.html", page)  # a full disk keeps the old index whole


def published_profiles(root: Path) -> list[str]:
    """Profiles published under ``root``: ``cpu`` (root itself) and each ``root/<profile>/``."""
    found = ["cpu"] if any(root.glob("*/metrics.json")) else []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if any(sub.glob("*/metrics.json")) and not (sub / "metrics.json").exists():
            found.append(sub.name)
    return found


def _published_records(target: Path) -> list[tuple[str, dict]]:
    out = []
    for metrics_file in sorted(target.glob("*/metrics.json")):
        try:
            out.append((metrics_file.parent.name, json.loads(metrics_file.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _meta(rec: Mapping[str, Any]) -> str:
    commit = html.escape((rec.get("git_commit") or "unknown")[:12])
    dirty = " (dirty tree)" if rec.get("git_dirty") else ""
    wall = rec.get("wall_time_s")
    minutes = f" · {float(wall) / 60:.1f} min" if isinstance(wall, (int, float)) else ""
    return (f"run {html.escape(str(rec.get('run_id')))} · profile {html.escape(str(rec.get('profile')))} · "
            f"commit <code>{commit}</code>{dirty}{minutes}")


def _cards(target: Path, prefix: str) -> str:
    blocks = []
    for study, rec in _published_records(target):
        figure = key_figure_name(rec)
        thumb = f"{prefix}{study}/{figure}.png" if figure and (target / study / f"{figure}.png").is_file() else None
        links = f" · <a href='{prefix}{study}/report.html'>report</a> · <a href='{prefix}{study}/metrics.json'>metrics.json</a>"
        blocks.append(card_block(rec, title=study_title(study), report_href=f"{prefix}{study}/report.html",
                                 figure_src=thumb, meta=_meta(rec) + links))
    return "\n".join(blocks)


def write_published_index(root: Path | str) -> None:
    """(Re)write ``index.html`` of every published profile under ``root`` from the pages on disk:
    the study cards of that profile, then (on the top page) the cards of every other profile."""
    root = Path(root)
    profiles = published_profiles(root)
    for profile in profiles:
        target = root if profile == "cpu" else root / profile
        up = "" if profile == "cpu" else "../"
        others = [p for p in profiles if p != profile]
        nav = " · ".join(f"<a href='{up}{'' if p == 'cpu' else p + '/'}index.html'>{html.escape(p)}</a>" for p in others)
        parts = [f"<h1>Published results ({html.escape(profile)} profile)</h1>",
                 f"<p>Other published profiles: {nav}</p>" if nav else "",
                 "<p>Each card was written by the run it names: the question, the answer built from the run's "
                 "paired comparisons, and its headline numbers with 95% intervals over the unit named. "
                 "The commit names the code that produced it.</p>",
                 _cards(target, "")]
        if profile == "cpu" and others:
            parts.append("<h1>Other published profiles</h1>")
            for other in others:
                parts.append(f"<h2 id='{html.escape(other)}'><a href='{html.escape(other)}/index.html'>"
                             f"{html.escape(other)}</a></h2>")
                parts.append(_cards(root / other, f"{other}/"))
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>published results · "
                f"{html.escape(profile)} profile</title>" + PAGE_STYLE + "</head><body>"
                + "\n".join(p for p in parts if p) + "</body></html>")
        runs.atomic_write_text(target / "index.html", page)
