"""The Study 04 experiment: data preparation, the front-end steps, methods x encoder x decoder seeds.

:func:`run_study` returns a :class:`StudyResult` of typed records: one :class:`EncoderRecord` per
stage-1 encoder (dev mention P/R/F1 of each candidate set, per-epoch history), one
:class:`DecoderRecord` per (method, encoder seed, decoder seed, candidate set) test evaluation (the
Doc2EDAG scores, per-document counts for comparisons paired over documents, the dev choices), and
one :class:`SearchRecord` per point of the dev-tuned learning-rate search. :mod:`.summary` turns
them into tables and :class:`~epi_utils.workbench.stats.Comparison` verdicts.
"""
from __future__ import annotations

import os
import time
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
from epi_utils.events.frontend import extract_features, predict_mentions, train_encoder
from epi_utils.events.methods import Variant, variants_for
from epi_utils.events.metric import document_stats, evaluate_documents, mention_scores, prf, recall_by_event_count
from epi_utils.events.schema import EventSchema, load_schema
from epi_utils.events.synthetic import generate_documents
from epi_utils.events.training import decode, selection_key, train_decoder
from epi_utils.workbench.progress import log_line, progress_line

SCHEMA_DIR = Path(__file__).with_name("schemas")
ANNOTATED = "annotated"   # candidate-set name of the upper bound: decoded from the annotated mentions


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

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v)} ({sum(d.is_multi for d in v)} multi-event)" for k, v in self.full.items())
        at = ", ".join(f"{k} sentences {100 * v:.1f}%" for k, v in sorted(self.reachable_at.items()))
        return (f"{self.report.summary()}. Split (seed {self.split_seed}, fractions {list(self.fractions)}, "
                f"stratified by single/multi): {sizes}. Test gold arguments reachable after truncation to "
                f"{self.max_sentences} sentences: {100 * self.reachable:.1f}% ({at}).")


def locate_data(data_subdir: str, schema_file: str) -> tuple[Path, Path]:
    """The data folder ``EPI_DATA_DIR/data_subdir`` and its schema file (in the folder, else a schema
    of that name shipped in ``epi_utils/events/schemas/``). ``FileNotFoundError`` names what is missing
    and how to get it (the folder through :func:`epi_utils.workbench.datasets.require_folder`)."""
    from epi_utils.workbench.datasets import require_folder
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
        if len(split_files) != 3:
            raise ValueError(f"split_files must name three files (train, dev, test), got {list(split_files)}")
        full, report = {}, LoadReport()
        for name, fname in zip(("train", "dev", "test"), split_files):
            docs, rep = load_documents(Path(data_path) / fname, schema, on_error=on_error, limit=limit_docs or None)
            full[name] = docs
            report.n_read += rep.n_read; report.n_kept += rep.n_kept; report.skipped.update(rep.skipped)
            report.files += rep.files; report.messages += rep.messages
        return _prepare(None, report, schema, split_seed, fractions, max_sentences, max_sentence_chars, reach_limits, full)
    docs, report = load_documents(data_path, schema, on_error=on_error, limit=limit_docs or None)
    if not docs:
        raise ValueError(f"no valid document under {Path(data_path).name} ({report.summary()}); "
                         f"first errors: {report.messages[:3]}")
    return _prepare(docs, report, schema, split_seed, fractions, max_sentences, max_sentence_chars, reach_limits)


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


@dataclass
class EncoderRecord:
    """One stage-1 encoder: dev mention scores per candidate set, per-epoch history, pretraining losses."""

    encoder_seed: int
    mention: dict[str, dict]               # candidate set -> mention P/R/F1 on dev (metric.mention_scores)
    history: list[dict]
    pretrain_losses: list[float]
    seconds: float
    step: str = "main"                     # front-end step name ("main" = the study's encoder)


@dataclass
class DecoderRecord:
    """One test evaluation of one trained decoder on one candidate set."""

    method: str
    encoder_seed: int
    decoder_seed: int
    candidates: str                         # "union" / "predicted" / "rules" / "annotated" (upper bound)
    scores: dict                            # evaluate_documents' flat scores + f1_<type>
    doc_counts: list[tuple[int, int, int]]  # per test document: tp, fp, fn over all roles
    dev: dict                               # dev choices: best_dev_f1, best_epoch, last_epoch, threshold, gate, lr
    seconds: float
    step: str = "main"

    @property
    def unit(self) -> str:
        return f"enc{self.encoder_seed}-dec{self.decoder_seed}"

    def doc_f1(self) -> np.ndarray:
        """Role-level F1 of every test document (0 where it has no true positive)."""
        return np.array([prf(*c)["f1"] for c in self.doc_counts])


@dataclass
class SearchRecord:
    """One point of the dev-tuned search of a method (first encoder and decoder seed)."""

    method: str
    dec_lr: float
    dev_key: tuple
    chosen: bool = False


@dataclass
class StudyResult:
    encoders: list[EncoderRecord] = field(default_factory=list)
    decoders: list[DecoderRecord] = field(default_factory=list)
    search: list[SearchRecord] = field(default_factory=list)
    by_count: list[dict] = field(default_factory=list)
    predictions: dict[str, list] = field(default_factory=dict)   # method -> test predictions (first unit)
    histories: dict[str, list] = field(default_factory=dict)     # method -> decoder history (first unit)
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self, *, candidates: str | None = None, step: str = "main") -> list[DecoderRecord]:
        return [r for r in self.decoders if r.step == step and (candidates is None or r.candidates == candidates)]


def _flat(scores: dict) -> dict:
    out = {k: v for k, v in scores.items() if k != "per_type"}
    out.update({f"f1_{t}": v["f1"] for t, v in scores["per_type"].items()})
    out.update({f"macro_f1_{t}": v["macro_f1"] for t, v in scores["per_type"].items()})
    return out


def _doc_counts(preds, golds, schema) -> list[tuple[int, int, int]]:
    out = []
    for p, g in zip(preds, golds):
        tp = fp = fn = 0
        for roles in document_stats(p, g, schema):
            for a, b, c in roles:
                tp, fp, fn = tp + a, fp + b, fn + c
        out.append((tp, fp, fn))
    return out


@dataclass
class _Encoded:
    enc: object
    feats: dict[str, list[dict]]
    record: EncoderRecord


def encode_split(data: PreparedData, cfg: EventConfig, *, seed: int, step: str = "main",
                 test_candidates: Sequence[str] = (), progress: bool = False, log=None) -> _Encoded:
    """Train one stage-1 encoder (pretraining on every split's text, dev-chosen epoch), score its
    candidate sets on dev, and extract the frozen features: ``train`` (``cfg.train_candidates``),
    ``dev`` (``cfg.candidates``), ``dev_annotated``, ``test`` (``cfg.candidates``), ``test_annotated``
    and ``test_<c>`` for every extra candidate set in ``test_candidates``. ``log`` receives one line
    per encoder epoch."""
    t0 = time.perf_counter()
    unlabeled = data.cut["train"] + data.cut["dev"] + data.cut["test"]
    enc = train_encoder(data.cut["train"], data.schema, cfg, seed=seed, unlabeled=unlabeled,
                        dev_docs=data.cut["dev"], progress=progress, log=log)
    kw = {"min_mention_chars": cfg.min_mention_chars}
    mention = {}
    for c in dict.fromkeys(("predicted", "rules", "union", cfg.candidates)):
        found = predict_mentions(enc, data.cut["dev"], candidates=c, **kw)
        mention[c] = mention_scores(found, [d.mentions for d in data.cut["dev"]],
                                    gold_fields=[d.fields for d in data.cut["dev"]])
    s = data.schema
    feats = {"train": (extract_features(enc, data.cut["train"], s, candidates="gold") if cfg.train_candidates == "gold"
                       else extract_features(enc, data.cut["train"], s, candidates="union", add_gold=True, **kw)),
             "dev": extract_features(enc, data.cut["dev"], s, candidates=cfg.candidates, **kw),
             "dev_annotated": extract_features(enc, data.cut["dev"], s, candidates="gold"),
             "test": extract_features(enc, data.cut["test"], s, candidates=cfg.candidates, **kw),
             "test_annotated": extract_features(enc, data.cut["test"], s, candidates="gold")}
    for c in test_candidates:
        if c != cfg.candidates and f"test_{c}" not in feats:
            feats[f"test_{c}"] = extract_features(enc, data.cut["test"], s, candidates=c, **kw)
    rec = EncoderRecord(seed, mention, list(getattr(enc, "history", [])), list(getattr(enc, "pretrain_losses", [])),
                        time.perf_counter() - t0, step)
    return _Encoded(enc, feats, rec)


def _evaluate(res: StudyResult, data: PreparedData, cfg: EventConfig, dec, info, *, method: str, enc_seed: int,
              dec_seed: int, feats: list[dict], candidates: str, secs: float, step: str, lr: float) -> list:
    gold = [d.records for d in data.full["test"]]
    preds = decode(dec, feats, data.schema, cfg)
    dev = {k: info.get(k) for k in ("best_dev_f1", "best_dev_f1_annotated", "best_epoch", "last_epoch",
                                    "exist_threshold", "type_gate")}
    dev["dec_lr"] = lr
    res.decoders.append(DecoderRecord(method, enc_seed, dec_seed, candidates, _flat(evaluate_documents(preds, gold, data.schema)),
                                      _doc_counts(preds, gold, data.schema), dev, secs, step))
    return preds


def _train(encoded: _Encoded, data: PreparedData, variant: Variant, cfg: EventConfig, seed: int, progress: bool):
    t0 = time.perf_counter()
    dec, info = train_decoder(encoded.feats["train"], data.schema, variant, cfg, seed=seed,
                              dev_feats=encoded.feats["dev"], dev_docs=data.full["dev"],
                              dev_gold_feats=encoded.feats["dev_annotated"], d_in=encoded.enc.dim,
                              num_fields=len(encoded.enc.labels), progress=progress)
    return dec, info, time.perf_counter() - t0


def run_study(data: PreparedData, cfg: EventConfig, *, progress: bool = False, log=log_line,
              extra_candidates: Sequence[str] = ("predicted", "rules")) -> StudyResult:
    """Every method of ``cfg.methods`` over ``cfg.encoder_seeds`` x ``cfg.decoder_seeds`` seeds.

    Encoder seeds are ``cfg.seed + i`` (each encoder pretrained and trained with its own seed);
    decoder seeds ``cfg.seed + 100 * (i + 1) + j``. With ``cfg.dec_lr_grid`` every method first gets
    the same search over decoder learning rates on the first encoder and decoder seed, chosen by the
    dev :func:`~.training.selection_key`; the chosen rate is used for all seeds. Every trained decoder
    is evaluated on the test split from the study's candidates (``cfg.candidates``) and from the
    annotated mentions (the upper bound, candidate set ``"annotated"``); the decoders of the first
    encoder are also evaluated on ``extra_candidates`` (the front-end steps, end to end). ``log``
    receives one line per trained decoder.
    """
    res = StudyResult()
    variants = variants_for(cfg.methods)
    gold_test = [d.records for d in data.full["test"]]
    t_all = time.perf_counter()
    chosen_lr: dict[str, float] = {}
    n_dec, done = cfg.encoder_seeds * cfg.decoder_seeds * len(variants), 0
    for i in range(cfg.encoder_seeds):
        enc_seed = cfg.seed + i
        encoded = encode_split(data, cfg, seed=enc_seed, test_candidates=extra_candidates if i == 0 else (),
                               progress=progress, log=log)
        res.encoders.append(encoded.record)
        res.seconds[f"encoder_{enc_seed}"] = encoded.record.seconds
        m = encoded.record.mention[cfg.candidates]
        log(f"study 04 encoder {i + 1}/{cfg.encoder_seeds} (seed {enc_seed}): dev mention P {m['p']:.3f} R {m['r']:.3f} F1 {m['f1']:.3f} "
            f"({cfg.candidates} candidates), {encoded.record.seconds:.0f} s")
        for j in range(cfg.decoder_seeds):
            dec_seed = cfg.seed + 100 * (i + 1) + j
            for v in variants:
                if v.name not in chosen_lr:   # the dev-tuned search, same grid for every method
                    grid = cfg.dec_lr_grid or (cfg.dec_lr,)
                    found = []
                    for lr in grid:
                        dec, info, secs = _train(encoded, data, v, cfg.replace(dec_lr=lr), dec_seed, progress)
                        key = selection_key(info["best_dev_f1"], info["best_dev_f1_annotated"], info["dev_loss"])
                        found.append((key, lr, dec, info, secs))
                        res.search.append(SearchRecord(v.name, lr, key))
                    best = max(found, key=lambda x: x[0])
                    chosen_lr[v.name] = best[1]
                    for r in res.search:
                        r.chosen = r.chosen or (r.method == v.name and r.dec_lr == best[1])
                    _, lr, dec, info, secs = best
                else:
                    lr = chosen_lr[v.name]
                    dec, info, secs = _train(encoded, data, v, cfg.replace(dec_lr=lr), dec_seed, progress)
                run_cfg = cfg.replace(dec_lr=lr)
                kw = dict(method=v.name, enc_seed=enc_seed, dec_seed=dec_seed, secs=secs, step="main", lr=lr)
                preds = _evaluate(res, data, run_cfg, dec, info, feats=encoded.feats["test"], candidates=cfg.candidates, **kw)
                _evaluate(res, data, run_cfg, dec, info, feats=encoded.feats["test_annotated"], candidates=ANNOTATED, **kw)
                for c in extra_candidates:
                    if i == 0 and c != cfg.candidates:
                        _evaluate(res, data, run_cfg, dec, info, feats=encoded.feats[f"test_{c}"], candidates=c, **kw)
                for k, s in recall_by_event_count(preds, gold_test, data.schema).items():
                    res.by_count.append({"method": v.name, "unit": f"enc{enc_seed}-dec{dec_seed}", "n_events": k,
                                         "recall": s["r"], "f1": s["f1"], "n_docs": s["n_docs"]})
                if i == 0 and j == 0:
                    res.predictions[v.name] = preds
                    res.histories[v.name] = info["history"]
                last = res.rows(candidates=cfg.candidates)[-1]
                done += 1
                head = progress_line("study 04 decoders", done=done, total=n_dec, elapsed=time.perf_counter() - t_all,
                                     unit="trained")
                log(f"{head}; {v.name} enc {enc_seed} dec {dec_seed}: test micro F1 {last.scores['micro_f1']:.3f}, "
                    f"dev F1 {info['best_dev_f1']:.3f} (epoch {info['best_epoch']}/{info['last_epoch']}, "
                    f"lr {lr:g}, threshold {info['exist_threshold']}, gate {info['type_gate']}), {secs:.0f} s")
        del encoded
    res.seconds["total"] = time.perf_counter() - t_all
    return res


def frontend_step(data: PreparedData, cfg: EventConfig, *, step: str, seed: int, method: str = "probes",
                  candidate_sets: Sequence[str] = ("predicted", "rules", "union"), progress: bool = False,
                  log=log_line) -> tuple[EncoderRecord, list[DecoderRecord]]:
    """One rung of the front-end ladder: an encoder trained with ``cfg`` (its dev mention scores per
    candidate set) and one ``method`` decoder, evaluated on the test split from ``cfg.candidates``
    and from every set in ``candidate_sets`` (records tagged ``step``, one per candidate set)."""
    res = StudyResult()
    encoded = encode_split(data, cfg, seed=seed, step=step, test_candidates=candidate_sets, progress=progress, log=log)
    dec, info, secs = _train(encoded, data, variants_for([method])[0], cfg, seed, progress)
    kw = dict(method=method, enc_seed=seed, dec_seed=seed, secs=secs, step=step, lr=cfg.dec_lr)
    _evaluate(res, data, cfg, dec, info, feats=encoded.feats["test"], candidates=cfg.candidates, **kw)
    for c in dict.fromkeys(candidate_sets):
        if c != cfg.candidates:
            _evaluate(res, data, cfg, dec, info, feats=encoded.feats[f"test_{c}"], candidates=c, **kw)
    if log is not None:
        parts = [f"{r.candidates}: dev mention F1 {encoded.record.mention[r.candidates]['f1']:.3f}, test micro F1 "
                 f"{r.scores['micro_f1']:.3f}" for r in res.decoders]
        log(f"study 04 front-end step '{step}': " + "; ".join(parts))
    return encoded.record, list(res.decoders)
