"""Documents in the Doc2EDAG layout: loading, validation, truncation and a seeded split.

Layout (Zheng et al., EMNLP 2019, Doc2EDAG release): a file is either a JSON array of
``[doc_id, doc]`` pairs (Doc2EDAG's ``train.json``) or one ``[doc_id, doc]`` JSON array per line
(the ``.jsonl`` files under ``docee/chfinann/``). ``doc`` holds ``sentences`` (list of str),
``ann_mspan2dranges`` (mention -> list of ``[sentence, start, end)`` char ranges),
``ann_mspan2guess_field`` (mention -> entity field) and ``recguid_eventname_eventdict_list``
(list of ``[record_id, event_type, {role: mention or null}]``).

Validation errors (:class:`DocumentError`) name the file with its full path and line, the document id
and the field. Kinds: ``structure`` (missing/ill-typed field, unreadable JSON), ``range_out_of_bounds``,
``range_text_mismatch``, ``unknown_event_type``, ``unknown_role``, ``argument_not_mention``.
``on_error="raise"`` fails on the first bad document; ``on_error="skip"`` drops it and counts it in
:class:`LoadReport`. A bad *record* (unknown event type or role, argument that is no mention) drops only
that record: the document keeps its valid records and the report names the dropped one (a document left
with no record is skipped). What the model reads (sentences, mention ranges, fields, records) is
validated strictly; fields it ignores (``ann_valid_dranges``, ...) only give a warning in the report.
A load that keeps no document, and a split left empty, raise :class:`EmptyDataError` with the counts and
the first reasons, so a run stops before training.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from epi_utils.events.schema import EventSchema

ERROR_KINDS = ("structure", "range_out_of_bounds", "range_text_mismatch", "unknown_event_type",
               "unknown_role", "argument_not_mention")
ON_ERROR = ("skip", "raise")


class EmptyDataError(ValueError):
    """No usable document (an empty file or folder, every document rejected) or an empty split."""


class DocumentError(ValueError):
    """A malformed document: ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, doc_id: Any, field_name: str, kind: str, detail: str):
        self.doc_id, self.field, self.kind, self.detail = doc_id, field_name, kind, detail
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
    skipped: Counter = field(default_factory=Counter)           # documents, per error kind
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    dropped_records: Counter = field(default_factory=Counter)   # records dropped from kept documents, per kind
    warnings: Counter = field(default_factory=Counter)          # ignored fields with an unexpected shape

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        out = f"read {self.n_read} documents from {len(self.files)} file(s), kept {self.n_kept}, skipped {self.n_skipped} ({kinds})"
        if self.dropped_records:
            out += ", records dropped from kept documents: " + ", ".join(
                f"{k}={v}" for k, v in sorted(self.dropped_records.items()))
        if self.warnings:
            out += ", ignored fields with an unexpected shape: " + ", ".join(
                f"{k} in {v} document(s)" for k, v in sorted(self.warnings.items()))
        return out

    def _note(self, message: str) -> None:
        if len(self.messages) < 20:
            self.messages.append(message)

    def add(self, other: "LoadReport") -> None:
        """Fold another load (e.g. one split file's) into this report: every count, file and message."""
        self.n_read += other.n_read
        self.n_kept += other.n_kept
        self.skipped.update(other.skipped)
        self.dropped_records.update(other.dropped_records)
        self.warnings.update(other.warnings)
        self.files += other.files
        for message in other.messages:
            self._note(message)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


#: fields of the Doc2EDAG layout the model never reads: a bad shape there is a warning, not an error
IGNORED_FIELDS = ("ann_valid_dranges", "ann_valid_mspans")


def parse_document(doc_id: Any, doc: Any, schema: EventSchema, *, dropped: list | None = None,
                   warnings: list | None = None) -> Document:
    """Validate one raw ``doc`` dict against ``schema``; raise :class:`DocumentError` if bad.

    With a ``dropped`` list, a bad record (unknown event type or role, argument that is not a mention,
    ill-formed record) is appended to it as a :class:`DocumentError` and left out, and the document keeps
    its other records; if no record is left, the first error is raised. With a ``warnings`` list, the
    names of ignored fields (:data:`IGNORED_FIELDS`) with an unexpected shape are appended to it."""
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
    for key in IGNORED_FIELDS:  # not read by the model: checked only to warn
        value = doc.get(key)
        if value is not None and not (isinstance(value, list) and all(
                isinstance(v, str) or (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(x) for x in v))
                for v in value)):
            if warnings is not None:
                warnings.append(key)
    fields_raw = doc.get("ann_mspan2guess_field", {}) or {}
    if not isinstance(fields_raw, dict):
        raise DocumentError(did, "ann_mspan2guess_field", "structure", "expected an object mention -> field")
    fields = {m: str(fields_raw.get(m, "")) for m in mentions}
    recs_raw = doc.get("recguid_eventname_eventdict_list")
    if not isinstance(recs_raw, list):
        raise DocumentError(did, "recguid_eventname_eventdict_list", "structure", "expected a list of records")
    records, errors = [], []
    for i, rec in enumerate(recs_raw):
        try:
            records.append(_parse_record(did, i, rec, schema, mentions))
        except DocumentError as exc:
            if dropped is None:
                raise
            errors.append(exc)
    if errors and not records:
        raise errors[0]
    if dropped is not None:
        dropped.extend(errors)
    return Document(did, list(sents), mentions, fields, records)


def _parse_record(did: str, i: int, rec: Any, schema: EventSchema, mentions: dict) -> tuple:
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
    return etype, tuple(argd.get(r) for r in roles)


def _read_entries(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(line, entry, error)`` for each ``[doc_id, doc]`` entry of a file: a JSON array (Doc2EDAG's
    ``train.json``, pretty-printed or not) or one JSON value per line. ``error`` names an unreadable
    entry (truncated JSON) with its line; reading goes on after it where the layout allows."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        first = next((ln for ln in text.splitlines() if ln.strip()), "")
        try:
            head = json.loads(first)  # a whole JSON value on the first line: one entry per line ...
            is_lines = not (isinstance(head, list) and (not head or isinstance(head[0], list)))  # ... unless it is the whole array
        except json.JSONDecodeError:
            is_lines = False
        if not is_lines:
            yield from _array_entries(text)
            return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield n, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def _array_entries(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """Entries of a JSON array read one by one, so a truncated file keeps the entries before the cut."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            yield text.count("\n", 0, pos) + 1, None, "invalid JSON (the array is not closed: truncated file?)"
            return
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            entry, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield line, None, f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            return
        yield line, entry, None


def _document_files(p: Path) -> list[Path]:
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".json", ".jsonl") and "schema" not in f.name)
        if not files:
            raise EmptyDataError(f"folder {p} holds no document files (*.json, *.jsonl)")
        return files
    if p.exists():
        return [p]
    raise FileNotFoundError(f"document file {p} does not exist")


def load_documents(paths: os.PathLike | str | Iterable[os.PathLike | str], schema: EventSchema, *,
                   on_error: str = "skip", limit: int | None = None) -> tuple[list[Document], LoadReport]:
    """Load and validate documents from one or more files (JSON array or JSON lines).

    A folder loads every ``*.json``/``*.jsonl`` inside it except files whose name contains
    ``schema``; a folder is ONE data set (fetch each data set into its own folder): a document id
    read twice raises ``ValueError`` naming both places. Returns ``(documents, report)``; skipped
    documents are counted per error kind, messages name the file's full path and line.
    Raises :class:`EmptyDataError` when no document is kept (with the counts and first reasons).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [f for p in map(Path, paths) for f in _document_files(p)]
    report, docs = LoadReport(files=[str(f) for f in files]), []
    seen: dict[str, str] = {}
    for f in files:
        n_in_file = 0
        for line, pair, problem in _read_entries(f):
            if limit is not None and report.n_read >= limit:
                break
            report.n_read += 1
            n_in_file += 1
            where = f"{f.resolve()}:{line}"
            dropped: list[DocumentError] = []
            ignored: list[str] = []
            try:
                if problem is not None:
                    raise DocumentError(where, "<line>", "structure", problem)
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise DocumentError(where, "<entry>", "structure", "expected [doc_id, doc]")
                doc = parse_document(pair[0], pair[1], schema, dropped=dropped if on_error == "skip" else None,
                                     warnings=ignored)
            except DocumentError as exc:
                if on_error == "raise":
                    if str(exc.doc_id) == where:
                        raise
                    raise DocumentError(exc.doc_id, exc.field, exc.kind, f"{exc.detail} (at {where})") from None
                report.skipped[exc.kind] += 1
                report._note(f"{where}: {exc}")
                continue
            if doc.doc_id in seen:
                raise ValueError(f"document id {doc.doc_id!r} is read twice: {seen[doc.doc_id]} and {where}; a folder "
                                 "must hold one data set (fetch each into its own folder, read one of them)")
            seen[doc.doc_id] = where
            for exc in dropped:
                report.dropped_records[exc.kind] += 1
                report._note(f"{where}: record dropped, document kept: {exc}")
            for key in ignored:
                report.warnings[key] += 1
            docs.append(doc)
        if n_in_file == 0:
            report._note(f"{f.resolve()}: holds no document")
    report.n_kept = len(docs)
    if not docs:
        raise EmptyDataError(f"no usable document in {', '.join(report.files) or 'no file'}: {report.summary()}; "
                             f"first reasons: {report.messages[:3]}")
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
    check_splits(out, minimum={name: 1 for name, f in zip(out, fr) if f > 0})
    return out


def check_splits(splits: dict[str, Sequence[Document]], *, minimum: dict[str, int] | int = 1,
                 report: LoadReport | None = None) -> None:
    """Raise :class:`EmptyDataError` when a split holds fewer documents than ``minimum`` (per split
    name, or one number for all), naming every split's size and the load's first reasons."""
    need = minimum if isinstance(minimum, dict) else {name: minimum for name in splits}
    short = [name for name, n in need.items() if len(splits.get(name, ())) < n]
    if short:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        why = f"; load: {report.summary()}; first reasons: {report.messages[:3]}" if report is not None else ""
        raise EmptyDataError(f"split(s) {short} hold fewer documents than needed "
                             f"({', '.join(f'{k} >= {need[k]}' for k in short)}): {sizes}{why}")
