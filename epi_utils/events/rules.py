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
preprocessing normalises amounts to digits with a unit suffix). Another data set gets rules of its own:
:func:`build_rule_set` learns character-shape patterns from the training split's annotated mentions
(:func:`derive_patterns`) and measures every candidate pattern's precision on train; the schema
file's ``patterns`` are the user's own; the precision gate is chosen on dev (see
:func:`~.design.encode_split`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
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


# --- rules learned from the data at hand (issue 29) -------------------------------------------------
_CLASS = (("d", r"[0-9]", r"\d+"), ("a", r"[A-Za-z]", r"[A-Za-z]+"))
_NUM_SEP = ".,"


def shape_pattern(mention: str) -> str | None:
    """The character-shape regular expression of an annotated mention, or ``None`` when it has no
    digit or Latin-letter run (a plain word: a shape would only repeat it).

    Runs of digits become ``\\d+``, runs of Latin letters ``[A-Za-z]+``, a ``.`` or ``,`` between two
    digit runs stays literal (so ``9.26元`` and ``1,200.5元`` keep their number shape), every other
    character is kept literally: ``2018年9月6日`` -> ``\\d+年\\d+月\\d+日``, ``76762170股`` -> ``\\d+股``,
    ``35.98%`` -> ``\\d+\\.\\d+%``. A pattern that starts or ends with a class run gets a look-around
    so that it never matches inside a longer run (``\\d+股`` does not match ``2股`` inside ``12股``).
    """
    parts: list[str] = []
    kinds: list[str] = []
    for ch in mention:
        kind = "d" if ch.isascii() and ch.isdigit() else "a" if ch.isascii() and ch.isalpha() else ""
        if kind and kinds and kinds[-1] == kind:
            continue
        parts.append({"d": r"\d+", "a": r"[A-Za-z]+"}.get(kind, re.escape(ch)))
        kinds.append(kind)
    if not any(kinds):
        return None
    if kinds[0]:
        parts.insert(0, r"(?<![0-9A-Za-z.,])")
    if kinds[-1]:
        parts.append(r"(?![0-9A-Za-z]|[.,][0-9])")
    return "".join(parts)


def derive_patterns(mention_sets: Sequence[Mapping[str, object]], *, min_support: int = 3) -> dict[str, str]:
    """Shape patterns (:func:`shape_pattern`) of the annotated mentions of training documents
    (``mention_sets``: one ``{mention: ...}`` per document), kept when at least ``min_support``
    distinct mention strings share the shape. Kinds are ``shape:<pattern>``."""
    count: dict[str, set] = {}
    for ms in mention_sets:
        for m in ms:
            pat = shape_pattern(m)
            if pat is not None:
                count.setdefault(pat, set()).add(m)
    return {f"shape:{p}": p for p, ms in sorted(count.items()) if len(ms) >= min_support}


def pattern_precision(patterns: Mapping[str, str], docs: Sequence) -> dict[str, tuple[float, int]]:
    """Per pattern kind, on ``docs`` (documents with ``sentences`` and annotated ``mentions``): the
    share of its distinct matched strings per document that are annotated mentions of that document,
    and the number of such matches: ``{kind: (precision, n_matched)}``."""
    out = {}
    for kind, rx in patterns.items():
        compiled = re.compile(rx)
        hit = n = 0
        for d in docs:
            found = {m.group(0) for sent in d.sentences for m in compiled.finditer(sent)}
            n += len(found)
            hit += sum(m in d.mentions for m in found)
        out[kind] = (hit / n if n else 0.0, n)
    return out


@dataclass
class RuleSet:
    """The rule patterns of one run: user patterns (always used), and candidate patterns (built-in
    and learned from the training split) with their precision on train; ``gate`` (chosen on dev) is
    the least train precision a candidate pattern needs to be used (``None``: no candidate pattern)."""

    user: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, str] = field(default_factory=dict)
    precision: dict[str, tuple[float, int]] = field(default_factory=dict)
    gate: float | None = 0.0
    gate_f1: dict = field(default_factory=dict)     # gate -> dev mention F1 of the union (the choice)

    def patterns(self, gate: float | None | str = "chosen") -> dict[str, str]:
        g = self.gate if gate == "chosen" else gate
        used = dict(self.user)
        if g is not None:
            used.update({k: p for k, p in self.candidates.items() if self.precision.get(k, (0.0, 0))[0] >= g})
        return used

    def table(self) -> list[dict]:
        """One row per pattern: kind, source (user / built-in / learned), train precision, matches, used."""
        used = self.patterns()
        rows = [{"pattern": k, "source": "user (schema file)", "train precision": float("nan"), "train matches": 0,
                 "used": True} for k in self.user]
        for k in self.candidates:
            p, n = self.precision.get(k, (0.0, 0))
            rows.append({"pattern": k, "source": "learned (train mentions)" if k.startswith("shape:") else "built-in",
                         "train precision": p, "train matches": n, "used": k in used})
        return rows


def build_rule_set(train_docs: Sequence, *, user: Mapping[str, str] = (), builtin: bool = True,
                   min_support: int = 3) -> RuleSet:
    """The :class:`RuleSet` of a training split: ``user`` patterns, the built-in :data:`PATTERNS`
    (``builtin``) and the shapes learned from the training documents' annotated mentions, each
    candidate with its precision on the training documents. The gate is chosen later, on dev."""
    cands = dict(PATTERNS) if builtin else {}
    cands.update(derive_patterns([d.mentions for d in train_docs], min_support=min_support))
    cands = {k: p for k, p in cands.items() if k not in dict(user)}
    return RuleSet(dict(user), cands, pattern_precision(cands, train_docs))
