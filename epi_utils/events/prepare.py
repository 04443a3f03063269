"""Study 04's inputs: the documents of a run, loaded, validated, split and truncated.

:func:`prepare` builds them from a config: Doc2EDAG-layout files under ``EPI_DATA_DIR/data_subdir``
(``data_source="real"``) or synthetic documents with planted records for the shipped ChFinAnn
schema (``data_source="synthetic"``). Evaluation always uses the untruncated gold records
(``full``); the model reads the truncated ones (``cut``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from epi_utils.events.config import EventConfig
from epi_utils.events.data import (
    Document,
    LoadReport,
    load_documents,
    parse_document,
    reachable_share,
    split_documents,
    truncate_document,
)
from epi_utils.events.schema import EventSchema, load_schema
from epi_utils.events.synthetic import generate_documents
from epi_utils.workbench.datasets import require_folder

SCHEMA_DIR = Path(__file__).with_name("schemas")
#: the schema shipped for the synthetic data source (runs without any data)
SYNTHETIC_SCHEMA = "chfinann_event_schema.json"
SPLITS = ("train", "dev", "test")


class SplitFileError(ValueError):
    """A document present in two split files (train/dev/test would overlap)."""


@dataclass
class PreparedData:
    schema: EventSchema
    report: LoadReport
    full: dict[str, list[Document]]        # untruncated split (gold records for evaluation)
    cut: dict[str, list[Document]]         # truncated documents fed to the model
    reachable: float                       # share of test gold arguments surviving truncation
    reachable_at: dict[int, float]         # the same share at other sentence limits
    split_seed: int
    fractions: tuple
    max_sentences: int
    per_file: dict[str, LoadReport] = field(default_factory=dict)   # split file -> its load report (split files only)
    name: str = ""                         # the data set's name in reports (schema "name", else the folder)

    def describe(self) -> str:
        """The load, where the split came from (a seeded split, or the split files with each file's
        load report), the split sizes and the share of test arguments reachable after truncation."""
        sizes = ", ".join(f"{k} {len(v)} ({sum(d.is_multi for d in v)} multi-event)" for k, v in self.full.items())
        at = ", ".join(f"{k} sentences {100 * v:.1f}%" for k, v in sorted(self.reachable_at.items()))
        if self.per_file:
            files = ", ".join(f"{f} ({k})" for f, k in zip(self.per_file, SPLITS))
            loads = "; ".join(f"{f}: {r.summary()}" for f, r in self.per_file.items())
            where = f"Split from the files {files} (per file: {loads})"
        else:
            where = f"Split (seed {self.split_seed}, fractions {list(self.fractions)}, stratified by single/multi)"
        return (f"Data set: {self.name or 'unnamed'} ({len(self.schema.event_types)} event types: "
                f"{', '.join(self.schema.event_types)}). {self.report.summary()}. {where}: {sizes}. Test gold arguments reachable after truncation to "
                f"{self.max_sentences} sentences: {100 * self.reachable:.1f}% ({at}).")


def locate_data(data_subdir: str, schema_file: str) -> tuple[Path, Path]:
    """The data folder ``EPI_DATA_DIR/data_subdir`` and its schema file (in the folder, else a schema
    of that name shipped in ``epi_utils/events/schemas/``). ``FileNotFoundError`` names what is missing
    and how to get it (the folder through :func:`epi_utils.workbench.datasets.require_folder`)."""
    folder = require_folder(data_subdir)   # DatasetMissing (a FileNotFoundError) says how to get it
    for cand in (folder / schema_file, SCHEMA_DIR / schema_file):
        if cand.is_file():
            return folder, cand
    raise FileNotFoundError(f"schema file {schema_file!r} is neither in the data folder {data_subdir!r} nor among the "
                            f"shipped schemas {sorted(p.name for p in SCHEMA_DIR.glob('*.json'))}; set -p schema_file")


def prepare_data(data_path: os.PathLike | str, schema_path: os.PathLike | str, *, split_seed: int,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), max_sentences: int, max_sentence_chars: int,
                 on_error: str = "skip", limit_docs: int = 0, reach_limits: Sequence[int] = (24, 48, 64),
                 split_files: Sequence[str] = ()) -> PreparedData:
    """Load, validate, split and truncate the Doc2EDAG-layout documents under ``data_path`` with the
    schema at ``schema_path``. Without ``split_files`` every document file of the folder is loaded
    and divided by a seeded split (``split_seed``, ``fractions``); with three file names (train, dev,
    test; e.g. Doc2EDAG's ``train.json, dev.json, test.json``) each split is read from its file.
    ``limit_docs > 0`` keeps only the first documents (of each file with ``split_files``)."""
    schema = load_schema(schema_path)
    if split_files:
        full, report, per_file = load_split_files(data_path, split_files, schema, on_error=on_error, limit_docs=limit_docs)
        data = _prepare(None, report, schema, split_seed, fractions, max_sentences, max_sentence_chars, reach_limits, full)
        data.per_file = per_file
        data.name = schema.name or Path(data_path).name
        return data
    docs, report = load_documents(data_path, schema, on_error=on_error, limit=limit_docs or None)
    if not docs:
        raise ValueError(f"no valid document under {Path(data_path).name} ({report.summary()}); "
                         f"first errors: {report.messages[:3]}")
    data = _prepare(docs, report, schema, split_seed, fractions, max_sentences, max_sentence_chars, reach_limits)
    data.name = schema.name or Path(data_path).name
    return data


def load_split_files(folder: os.PathLike | str, split_files: Sequence[str], schema: EventSchema, *,
                     on_error: str = "skip", limit_docs: int = 0
                     ) -> tuple[dict[str, list[Document]], LoadReport, dict[str, LoadReport]]:
    """Train, dev and test documents from three files of ``folder`` (Doc2EDAG's ``train.json``,
    ``dev.json``, ``test.json``): ``(split -> documents, the report of all files, file -> its report)``.

    The combined report holds every file's counts (read, kept, skipped, dropped records, warnings),
    files and messages. A document id found in two files raises :class:`SplitFileError` naming both
    files and the first ids (the test set would leak into training); ``limit_docs > 0`` keeps the
    first documents of each file.
    """
    if len(split_files) != 3:
        raise ValueError(f"split_files must name three files (train, dev, test), got {list(split_files)}")
    full, per_file, report = {}, {}, LoadReport()
    owner: dict[str, str] = {}
    for name, fname in zip(SPLITS, split_files):
        docs, rep = load_documents(Path(folder) / fname, schema, on_error=on_error, limit=limit_docs or None)
        clash = [d.doc_id for d in docs if d.doc_id in owner]
        if clash:
            others = ", ".join(sorted({owner[i] for i in clash}))
            raise SplitFileError(f"{len(clash)} document id(s) of {fname} also in {others} (first: {clash[:3]}); "
                                 "a document must be in one split file only")
        owner.update((d.doc_id, fname) for d in docs)
        full[name], per_file[fname] = docs, rep
        report.add(rep)
    return full, report, per_file


def _prepare(docs, report, schema, split_seed, fractions, max_sentences, max_sentence_chars, reach_limits,
             full=None) -> PreparedData:
    full = full if full is not None else split_documents(docs, seed=split_seed, fractions=fractions)
    cut = {k: [truncate_document(d, max_sentences=max_sentences, max_sentence_chars=max_sentence_chars) for d in v]
           for k, v in full.items()}
    at = {n: reachable_share(full["test"], [truncate_document(d, max_sentences=n, max_sentence_chars=max_sentence_chars)
                                             for d in full["test"]]) for n in reach_limits}
    return PreparedData(schema, report, full, cut, reachable_share(full["test"], cut["test"]), at, split_seed,
                        tuple(fractions), max_sentences)


def synthetic_data(schema: EventSchema, *, n_docs: int, seed: int, max_sentences: int, max_sentence_chars: int,
                   **generator_kw) -> PreparedData:
    """Synthetic documents for ``schema`` (see :mod:`.synthetic`), split and truncated like real data."""
    raw = generate_documents(schema, n_docs=n_docs, rng=np.random.default_rng(seed), **generator_kw)
    docs = [parse_document(i, d, schema) for i, d in raw]
    report = LoadReport(n_read=len(docs), n_kept=len(docs), files=["<synthetic>"])
    return _prepare(docs, report, schema, seed, (0.7, 0.1, 0.2), max_sentences, max_sentence_chars, ())


def prepare(cfg: EventConfig) -> PreparedData:
    """The documents ``cfg`` names: ``cfg.data_source == "real"``: the folder ``cfg.data_subdir`` under
    ``EPI_DATA_DIR`` with ``cfg.schema_file`` (:func:`locate_data`, :func:`prepare_data`);
    ``"synthetic"``: ``cfg.synthetic_docs`` documents for the shipped schema ``cfg.synthetic_schema``
    (default ChFinAnn's), split with ``cfg.split_seed``."""
    if cfg.data_source == "real":
        folder, schema_path = locate_data(cfg.data_subdir, cfg.schema_file)
        data = prepare_data(folder, schema_path, split_seed=cfg.split_seed, max_sentences=cfg.max_sentences,
                            max_sentence_chars=cfg.max_sentence_chars, on_error=cfg.on_error, limit_docs=cfg.limit_docs,
                            split_files=cfg.split_files)
        return data
    path = SCHEMA_DIR / cfg.synthetic_schema
    if not path.is_file():
        raise FileNotFoundError(f"synthetic_schema {cfg.synthetic_schema!r} is not among the shipped schemas "
                                f"{sorted(p.name for p in SCHEMA_DIR.glob('*.json'))}")
    schema = load_schema(path)
    data = synthetic_data(schema, n_docs=cfg.synthetic_docs, seed=cfg.split_seed,
                          max_sentences=cfg.max_sentences, max_sentence_chars=cfg.max_sentence_chars)
    data.name = f"synthetic documents, schema {schema.name or cfg.synthetic_schema}"
    return data
