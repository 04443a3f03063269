"""High-recall rule candidates for value-like arguments (dates, share counts, money, ratios, codes).

Most ChFinAnn roles are values whose surface form is regular: ``2018年9月6日`` (dates),
``76762170股`` (share counts), ``9.26元`` / ``7750848.0元`` (prices, amounts), ``35.98%`` (ratios),
``600703`` (stock codes). A from-scratch character NER head learns their exact boundaries slowly,
while a regular expression finds them at near-perfect recall. The rule spans are merged with the
NER head's spans (``candidates="union"`` in :func:`~.training.extract_features`), and the decoder,
trained on the same union, learns to leave spurious ones unused: the precision of the rules is the
decoder's job, their recall is the front end's. Spans are returned in the layout of
:meth:`~.encoder.DocumentEncoder.decode_mentions` (``{mention: (field, [(sentence, start, end)])}``),
with field ``""`` (the encoder's head assigns a field, see :func:`~.training.extract_features`).

The patterns follow the value formats of Doc2EDAG's ChFinAnn (Zheng et al., EMNLP 2019, whose
preprocessing normalises amounts to digits with a unit suffix); a data set with other formats adds
its own via ``patterns=``.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
#: kind -> regular expression (compiled in :func:`rule_mentions`); the kinds are names only.
PATTERNS: dict[str, str] = {
    "date": r"\d{4}年\d{1,2}月\d{1,2}日|\d{4}年\d{1,2}月|\d{4}-\d{1,2}-\d{1,2}",
    "shares": _NUM + r"(?:万|亿)?股",
    "money": _NUM + r"(?:万|亿)?(?:美元|港元|元)",
    "ratio": _NUM + r"%",
    "code": r"(?<!\d)\d{6}(?!\d)",
}


def rule_mentions(sentences: Sequence[str], *, patterns: Mapping[str, str] | None = None,
                  kinds: Sequence[str] | None = None) -> dict[str, tuple[str, list[tuple[int, int, int]]]]:
    """Every match of the value patterns in ``sentences``: ``{text: ("", [(s, a, b), ...])}``.

    ``patterns`` defaults to :data:`PATTERNS`; ``kinds`` restricts to some of its keys. Matches
    of different kinds never overlap in practice; if they do, both are kept (the decoder chooses).
    Identical strings are merged into one candidate with all their spans, as for NER spans.
    """
    pats = dict(PATTERNS if patterns is None else patterns)
    if kinds is not None:
        unknown = [k for k in kinds if k not in pats]
        if unknown:
            raise ValueError(f"unknown rule kinds {unknown}; known: {sorted(pats)}")
        pats = {k: pats[k] for k in kinds}
    regex = [re.compile(p) for p in pats.values()]
    found: dict[str, tuple[str, list[tuple[int, int, int]]]] = {}
    for s, sent in enumerate(sentences):
        for rx in regex:
            for m in rx.finditer(sent):
                found.setdefault(m.group(0), ("", []))[1].append((s, m.start(), m.end()))
    return found


def merge_candidates(*sources: Mapping[str, tuple[str, list]]) -> dict[str, tuple[str, list]]:
    """Union of candidate dicts by mention string: spans are merged (no duplicates, sorted) and the
    first non-empty field wins (so NER spans given first keep their field)."""
    out: dict[str, tuple[str, list]] = {}
    for src in sources:
        for m, (fld, spans) in src.items():
            if m not in out:
                out[m] = (fld, sorted(set(map(tuple, spans))))
            else:
                old_f, old_s = out[m]
                out[m] = (old_f or fld, sorted(set(old_s) | set(map(tuple, spans))))
    return out
