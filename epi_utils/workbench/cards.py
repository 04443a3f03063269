"""A study's answer as the index shows it: a result card (question, answer, headline numbers, figure).

The index of reports is built from the runs' ``metrics.json`` (the notebook ran in another process),
so the card is *data* written beside the metrics, not an object the index calls:

- :class:`Headline`: one number for a reader: a name (``"forgetting of task 0, EPI"``), the mean,
  its interval, the measurement's unit (``"share of samples"``) and what the interval is over
  (``"95% t-interval over 8 seeds"``). :meth:`Headline.from_interval` builds one from a
  :class:`epi_utils.workbench.stats.Interval`; :meth:`Headline.text` rounds it to what the interval
  supports (:func:`epi_utils.workbench.tables.format_interval`).
- :func:`answer_sentence`: the answer as one sentence built from a paired comparison's verdict
  (:class:`epi_utils.workbench.stats.Comparison`), never hand-written: "EPI is better than full SFT
  on forgetting: ...", or "No difference ... detected; the design could detect ...".
- :class:`Card`: ``question`` (one line), ``answer`` (from :func:`answer_sentence`), 3-5
  ``headlines`` and the name of the key ``figure`` (as saved by ``plots.save_figure``);
  ``to_dict``/``from_dict`` for ``metrics.json["card"]`` and :func:`card_html` for the index.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any, Mapping, Sequence

from epi_utils.workbench.stats import Comparison, Interval, Verdict
from epi_utils.workbench.tables import format_interval, format_number, format_p, format_value

#: how many headline numbers a card holds (issue 32: "3-5 headline numbers").
MIN_HEADLINES, MAX_HEADLINES = 3, 5


@dataclasses.dataclass(frozen=True)
class Headline:
    """One headline number: ``name``, ``value`` and its interval ``[low, high]`` (None when there is
    none), the measurement's ``unit`` ("F1 points", "share of samples"; "" for a plain ratio) and
    ``over`` (what the interval is taken over: "95% t-interval over 8 seeds")."""

    name: str
    value: float
    low: float | None = None
    high: float | None = None
    unit: str = ""
    over: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a headline needs a reader-facing name")
        if "." in self.name.split()[0] and " " not in self.name:
            raise ValueError(f"headline name {self.name!r} looks like a metrics key; name it for a reader")

    @classmethod
    def from_interval(cls, name: str, iv: Interval, *, unit: str = "") -> Headline:
        """A headline from an :class:`~epi_utils.workbench.stats.Interval` (its label becomes ``over``)."""
        degenerate = iv.n < 2 or iv.low == iv.high
        return cls(name, float(iv.mean), None if degenerate else float(iv.low), None if degenerate else float(iv.high),
                   unit, iv.label() if not degenerate else f"{iv.n} {iv.unit}, no interval")

    def value_text(self) -> str:
        """``"0.778 [0.699, 0.857]"``, or the value alone (three significant digits) without an interval."""
        if self.low is None or self.high is None:
            return format_value(float(self.value))
        return format_interval(self.value, self.low, self.high)

    def text(self) -> str:
        """``"forgetting of task 0, EPI: 0.778 [0.699, 0.857] share of samples (95% t-interval over 8 seeds)"``."""
        unit = f" {self.unit}" if self.unit else ""
        over = f" ({self.over})" if self.over else ""
        return f"{self.name}: {self.value_text()}{unit}{over}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _difference(cmp: Comparison) -> str:
    d = cmp.diff
    if d.n < 2 or d.low == d.high:
        return format_number(float(d.mean))
    return format_interval(d.mean, d.low, d.high)


def answer_sentence(cmp: Comparison, *, a: str | None = None, b: str | None = None, metric: str | None = None,
                    unit: str = "") -> str:
    """One sentence answering "is A better than B on <metric>?" from a paired comparison's verdict.

    ``a``/``b``/``metric``: reader-facing names (default: the comparison's own). ``unit``: the
    metric's unit, printed after the difference. The sentence states the difference ``a - b`` with
    its interval, the units it is over and the p-value; a null result states the smallest difference
    the design could detect (``Comparison.detectable``), so that "no difference" is not read as
    "equal".
    """
    a, b, metric = a or cmp.a_name, b or cmp.b_name, metric or cmp.metric
    d = cmp.diff
    u = f" {unit}" if unit else ""
    over = f"{d.n} {d.unit}"
    p = format_p(cmp.p_value)
    where = f"({over}, {p})" if p else f"({over})"
    if cmp.verdict is Verdict.NOT_ENOUGH_DATA:
        return f"Too few paired {d.unit} ({d.n}) to compare {a} with {b} on {metric}."
    if cmp.verdict is Verdict.A_BETTER:
        return f"{a} is better than {b} on {metric}: {a} - {b} = {_difference(cmp)}{u} {where}."
    if cmp.verdict is Verdict.B_BETTER:
        return f"{b} is better than {a} on {metric}: {a} - {b} = {_difference(cmp)}{u} {where}."
    detect = format_number(float(cmp.detectable), digits=2)
    return (f"No difference between {a} and {b} on {metric} was detected: {a} - {b} = {_difference(cmp)}{u} "
            f"{where}; the design could detect a difference of about {detect}{u}.")


@dataclasses.dataclass(frozen=True)
class Card:
    """What the index shows for a study: ``question`` (one line), ``answer`` (a sentence built from
    verdict data, e.g. :func:`answer_sentence`), 3-5 ``headlines`` and the key ``figure``'s name."""

    question: str
    answer: str
    headlines: tuple[Headline, ...]
    figure: str | None = None

    def __post_init__(self) -> None:
        if not self.question.strip() or "\n" in self.question:
            raise ValueError("a card's question is one non-empty line")
        if not self.answer.strip():
            raise ValueError("a card needs an answer sentence")
        heads = tuple(h if isinstance(h, Headline) else Headline(**h) for h in self.headlines)
        if not MIN_HEADLINES <= len(heads) <= MAX_HEADLINES:
            raise ValueError(f"a card holds {MIN_HEADLINES}-{MAX_HEADLINES} headline numbers, got {len(heads)}")
        object.__setattr__(self, "headlines", heads)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json["card"]`` payload (JSON-ready; NaN bounds as None)."""
        clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v
        return {"question": self.question, "answer": self.answer, "figure": self.figure,
                "headlines": [{k: clean(v) for k, v in h.to_dict().items()} for h in self.headlines]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Card:
        return cls(data["question"], data["answer"], tuple(Headline(**h) for h in data["headlines"]), data.get("figure"))


def card_html(card: Card | Mapping[str, Any], *, title: str, report_href: str | None = None,
              figure_src: str | None = None) -> str:
    """A study's card for the index as an HTML fragment: the title (linked to the report), the
    question, the answer, a table of headline numbers (name, value with interval, unit, over what)
    and a thumbnail of the key figure (``figure_src``: its path relative to the index)."""
    card = card if isinstance(card, Card) else Card.from_dict(card)
    esc = html.escape
    head = f'<a href="{esc(report_href)}">{esc(title)}</a>' if report_href else esc(title)
    rows = "".join(f"<tr><td>{esc(h.name)}</td><td>{esc(h.value_text())}</td><td>{esc(h.unit)}</td>"
                   f"<td>{esc(h.over)}</td></tr>" for h in card.headlines)
    figure = (f'<a href="{esc(report_href or figure_src)}"><img class="thumb" src="{esc(figure_src)}" '
              f'alt="{esc(card.figure or title)}" width="280"></a>' if figure_src else "")
    return (f'<section class="card">\n<h2>{head}</h2>\n<p class="question">{esc(card.question)}</p>\n'
            f'<p class="answer">{esc(card.answer)}</p>\n{figure}\n'
            f'<table class="headlines"><tr><th>number</th><th>value [95% interval]</th><th>unit</th><th>over</th></tr>'
            f"{rows}</table>\n</section>")


def headlines_from(intervals: Sequence[tuple[str, Interval, str]]) -> tuple[Headline, ...]:
    """``[(name, interval, unit), ...]`` -> headlines, in that order."""
    return tuple(Headline.from_interval(name, iv, unit=unit) for name, iv, unit in intervals)
