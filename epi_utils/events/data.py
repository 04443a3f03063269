"""Documents in the Doc2EDAG layout: loading, validation, truncation and a seeded split.

Layout (Zheng et al., EMNLP 2019, Doc2EDAG release): a file is either a JSON array of
``[doc_id, doc]`` pairs (Doc2EDAG's ``train.json``) or one ``[doc_id, doc]`` JSON array per line
(the ``.jsonl`` files under ``docee/chfinann/``). ``doc`` holds ``sentences`` (list of str),
``ann_mspan2dranges`` (mention -> list of ``[sentence, start, end)`` char ranges),
``ann_mspan2guess_field`` (mention -> entity field) and ``recguid_eventname_eventdict_list``
(list of ``[record_id, event_type, {role: mention or null}]``).

Validation errors (:class:`DocumentError`) name the document id and the field. Kinds:
``structure`` (missing/ill-typed field), ``range_out_of_bounds``, ``range_text_mismatch``,
``unknown_event_type``, ``unknown_role``, ``argument_not_mention``. ``on_error="raise"`` fails on
the first bad document; ``on_error="skip"`` drops it and counts it in :class:`LoadReport`.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .schema import EventSchema

ERROR_KINDS = ("structure", "range_out_of_bounds", "range_text_mismatch", "unknown_event_type",
               "unknown_role", "argument_not_mention")
ON_ERROR = ("skip", "raise")


class DocumentError(ValueError):
    """A malformed document: ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, doc_id: Any, field_name: str, kind: str, detail: str):
        self.doc_id, self.field, self.kind = doc_id, field_name, kind
        super().__init__(f"document {doc_id!r}, field {field_name!r}: {kind}: {detail}")


@dataclass
class Document:
    """One validated document.

    ``records`` is a list of ``(event_type, args)`` with ``args`` a tuple of mention strings or
    ``None`` in the schema's role order. ``mentions`` maps a mention string to its ranges
    ``(sentence, start, end)``; ``fields`` maps it to its entity field name.
    """

    doc_id: str
    sentences: list[str]
    mentions: dict[str, list[tuple[int, int, int]]]
    fields: dict[str, str]
    records: list[tuple[str, tuple[str | None, ...]]]

    @property
    def num_records(self) -> int:
        return len(self.records)

    @property
    def is_multi(self) -> bool:
        """Doc2EDAG's multi-event document: more than one gold record."""
        return len(self.records) > 1

    def records_by_type(self, schema: EventSchema) -> list[list[tuple[str | None, ...]]]:
        out: list[list[tuple]] = [[] for _ in schema.event_types]
        for etype, args in self.records:
            out[schema.type_index(etype)].append(args)
        return out


@dataclass
class LoadReport:
    """What a load did: documents read, kept, skipped per error kind, and the first messages."""

    n_read: int = 0
    n_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"read {self.n_read} documents from {len(self.files)} file(s), kept {self.n_kept}, skipped {self.n_skipped} ({kinds})"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_document(doc_id: Any, doc: Any, schema: EventSchema) -> Document:
    """Validate one raw ``doc`` dict against ``schema``; raise :class:`DocumentError` if bad."""
    did = str(doc_id)
    if not isinstance(doc, dict):
        raise DocumentError(did, "<doc>", "structure", f"expected an object, got {type(doc).__name__}")
    sents = doc.get("sentences")
    if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
        raise DocumentError(did, "sentences", "structure", "expected a list of strings")
    m2r = doc.get("ann_mspan2dranges")
    if not isinstance(m2r, dict):
        raise DocumentError(did, "ann_mspan2dranges", "structure", "expected an object mention -> ranges")
    mentions: dict[str, list[tuple[int, int, int]]] = {}
    for m, ranges in m2r.items():
        if not isinstance(ranges, list):
            raise DocumentError(did, f"ann_mspan2dranges[{m!r}]", "structure", "expected a list of ranges")
        out = []
        for rg in ranges:
            if not (isinstance(rg, (list, tuple)) and len(rg) == 3 and all(_is_int(v) for v in rg)):
                raise DocumentError(did, f"ann_mspan2dranges[{m!r}]", "structure", f"range {rg!r} is not [sentence, start, end]")
            s, a, b = rg
            if not (0 <= s < len(sents)) or not (0 <= a < b <= len(sents[s])):
                slen = len(sents[s]) if 0 <= s < len(sents) else None
                raise DocumentError(did, f"ann_mspan2dranges[{m!r}]", "range_out_of_bounds",
                                    f"range {rg!r} outside the document ({len(sents)} sentences, sentence length {slen})")
            if sents[s][a:b] != m:
                raise DocumentError(did, f"ann_mspan2dranges[{m!r}]", "range_text_mismatch",
                                    f"range {rg!r} covers {sents[s][a:b]!r}, not the mention")
            out.append((s, a, b))
        mentions[m] = out
    for key in ("ann_valid_dranges",):
        for rg in doc.get(key, []) or []:
            if not (isinstance(rg, (list, tuple)) and len(rg) == 3 and all(_is_int(v) for v in rg)):
                raise DocumentError(did, key, "structure", f"range {rg!r} is not [sentence, start, end]")
            s, a, b = rg
            if not (0 <= s < len(sents)) or not (0 <= a < b <= len(sents[s])):
                raise DocumentError(did, key, "range_out_of_bounds", f"range {rg!r} outside the document")
    fields_raw = doc.get("ann_mspan2guess_field", {}) or {}
    if not isinstance(fields_raw, dict):
        raise DocumentError(did, "ann_mspan2guess_field", "structure", "expected an object mention -> field")
    fields = {m: str(fields_raw.get(m, "")) for m in mentions}
    recs_raw = doc.get("recguid_eventname_eventdict_list")
    if not isinstance(recs_raw, list):
        raise DocumentError(did, "recguid_eventname_eventdict_list", "structure", "expected a list of records")
    records = []
    for i, rec in enumerate(recs_raw):
        where = f"recguid_eventname_eventdict_list[{i}]"
        if not (isinstance(rec, (list, tuple)) and len(rec) == 3 and isinstance(rec[2], dict)):
            raise DocumentError(did, where, "structure", "expected [record_id, event_type, {role: mention}]")
        etype, argd = rec[1], rec[2]
        if etype not in schema.event_types:
            raise DocumentError(did, where, "unknown_event_type",
                                f"{etype!r} not in schema types {list(schema.event_types)}")
        roles = schema.roles_of(etype)
        for role, arg in argd.items():
            if role not in roles:
                raise DocumentError(did, f"{where}.{role}", "unknown_role",
                                    f"role {role!r} is not a role of {etype!r}; allowed: {list(roles)}")
            if arg is not None and arg not in mentions:
                raise DocumentError(did, f"{where}.{role}", "argument_not_mention",
                                    f"argument {arg!r} is not an annotated mention (ann_mspan2dranges)")
        records.append((etype, tuple(argd.get(r) for r in roles)))
    return Document(did, list(sents), mentions, fields, records)


def _read_pairs(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("[") :
        try:
            obj = json.loads(text)
            if isinstance(obj, list) and (not obj or (isinstance(obj[0], list) and len(obj[0]) == 2)):
                return obj  # JSON array of [doc_id, doc] (Doc2EDAG train.json)
        except json.JSONDecodeError:
            pass
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pairs.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{path.name}:{n}", "<line>", "structure", f"invalid JSON ({exc.msg})") from None
    return pairs


def load_documents(paths: os.PathLike | str | Iterable[os.PathLike | str], schema: EventSchema, *,
                   on_error: str = "skip", limit: int | None = None) -> tuple[list[Document], LoadReport]:
    """Load and validate documents from one or more files (JSON array or JSON lines).

    A folder loads every ``*.json``/``*.jsonl`` inside it except files whose name contains
    ``schema``. Returns ``(documents, report)``; skipped documents are counted per error kind.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".json", ".jsonl") and "schema" not in f.name)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"document file {p} does not exist")
    report, docs = LoadReport(files=[str(f) for f in files]), []
    for f in files:
        for pair in _read_pairs(f):
            if limit is not None and report.n_read >= limit:
                break
            report.n_read += 1
            try:
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise DocumentError(f"{f.name}#{report.n_read}", "<entry>", "structure", "expected [doc_id, doc]")
                docs.append(parse_document(pair[0], pair[1], schema))
            except DocumentError as exc:
                if on_error == "raise":
                    raise
                report.skipped[exc.kind] += 1
                if len(report.messages) < 20:
                    report.messages.append(str(exc))
    report.n_kept = len(docs)
    return docs, report


def truncate_document(doc: Document, *, max_sentences: int, max_sentence_chars: int) -> Document:
    """Keep the first ``max_sentences`` sentences, each cut to ``max_sentence_chars``.

    Mention ranges that fall outside are dropped (a mention with no range left is no longer a
    candidate); records are kept whole, so evaluation stays against the full gold records.
    """
    if max_sentences < 1 or max_sentence_chars < 1:
        raise ValueError("max_sentences and max_sentence_chars must be >= 1")
    sents = [s[:max_sentence_chars] for s in doc.sentences[:max_sentences]]
    ments = {}
    for m, rgs in doc.mentions.items():
        keep = [(s, a, b) for s, a, b in rgs if s < len(sents) and b <= len(sents[s])]
        if keep:
            ments[m] = keep
    return Document(doc.doc_id, sents, ments, {m: doc.fields[m] for m in ments}, list(doc.records))


def reachable_share(full: Sequence[Document], truncated: Sequence[Document]) -> float:
    """Share of gold record arguments whose mention survives truncation (an upper bound on recall)."""
    tot = hit = 0
    for d, t in zip(full, truncated):
        for _, args in d.records:
            for a in args:
                if a is not None:
                    tot += 1
                    hit += a in t.mentions
    return hit / tot if tot else 1.0


def split_documents(docs: Sequence[Document], *, seed: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)
                    ) -> dict[str, list[Document]]:
    """Seeded train/dev/test division, stratified by single- vs multi-event documents.

    ``fractions`` (train, dev, test) must be positive and sum to 1. The same seed always gives
    the same division of the same documents (ordered by ``doc_id`` first).
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or abs(fr.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    out = {"train": [], "dev": [], "test": []}
    ordered = sorted(docs, key=lambda d: (len(d.doc_id), d.doc_id))
    for group in (False, True):
        items = [d for d in ordered if d.is_multi == group]
        perm = rng.permutation(len(items))
        n_tr = int(round(fr[0] * len(items)))
        n_dev = int(round(fr[1] * len(items)))
        for k, idx in enumerate(perm):
            name = "train" if k < n_tr else "dev" if k < n_tr + n_dev else "test"
            out[name].append(items[idx])
    return out
