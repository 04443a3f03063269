"""The Study 04 experiment: data preparation, seeds x variants, synthetic sanity check.

Record of one run (kept in memory, summarised by :mod:`.analysis`): ``rows`` holds one dict per
(seed, method) with the Doc2EDAG scores on the test split (``micro_p``, ``micro_r``, ``micro_f1``,
``macro_f1``, ``single_*``, ``multi_*``, ``multi_recall``, ``f1_<EventType>``), the best dev F1 and
the training seconds; ``by_count`` holds recall by number of gold records per document.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import Document, LoadReport, load_documents, parse_document, reachable_share, split_documents, truncate_document
from .metric import evaluate_documents, mention_scores, recall_by_event_count
from .schema import EventSchema, load_schema
from .synthetic import generate_documents
from .training import (CANDIDATES, EventConfig, Variant, decode, default_variants, extract_features, predict_mentions,
                       train_decoder, train_encoder)


@dataclass
class PreparedData:
    schema: EventSchema
    report: LoadReport
    full: dict[str, list[Document]]        # untruncated split (gold records for evaluation)
    cut: dict[str, list[Document]]         # truncated documents fed to the model
    reachable: float                       # share of test gold arguments surviving truncation
    split_seed: int
    fractions: tuple

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v)} ({sum(d.is_multi for d in v)} multi-event)" for k, v in self.full.items())
        return (f"{self.report.summary()}. Split (seed {self.split_seed}, fractions {list(self.fractions)}, "
                f"stratified by single/multi): {sizes}. Test gold arguments reachable after truncation: "
                f"{100 * self.reachable:.1f}%.")


def prepare_data(data_path: os.PathLike | str, schema_path: os.PathLike | str, *, split_seed: int,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), max_sentences: int, max_sentence_chars: int,
                 on_error: str = "skip", limit_docs: int = 0) -> PreparedData:
    """Load, validate, split (seeded) and truncate. ``limit_docs > 0`` keeps only the first documents."""
    schema = load_schema(schema_path)
    docs, report = load_documents(data_path, schema, on_error=on_error, limit=limit_docs or None)
    return _prepare(docs, report, schema, split_seed, fractions, max_sentences, max_sentence_chars)


def _prepare(docs, report, schema, split_seed, fractions, max_sentences, max_sentence_chars) -> PreparedData:
    full = split_documents(docs, seed=split_seed, fractions=fractions)
    cut = {k: [truncate_document(d, max_sentences=max_sentences, max_sentence_chars=max_sentence_chars) for d in v]
           for k, v in full.items()}
    return PreparedData(schema, report, full, cut, reachable_share(full["test"], cut["test"]), split_seed, tuple(fractions))


def synthetic_data(schema: EventSchema, *, n_docs: int, seed: int, max_sentences: int, max_sentence_chars: int,
                   **generator_kw) -> PreparedData:
    """Synthetic documents for ``schema`` (see :mod:`.synthetic`), split and truncated like real data."""
    raw = generate_documents(schema, n_docs=n_docs, rng=np.random.default_rng(seed), **generator_kw)
    docs = [parse_document(i, d, schema) for i, d in raw]
    report = LoadReport(n_read=len(docs), n_kept=len(docs), files=["<synthetic>"])
    return _prepare(docs, report, schema, seed, (0.7, 0.1, 0.2), max_sentences, max_sentence_chars)


@dataclass
class StudyResult:
    rows: list[dict] = field(default_factory=list)
    by_count: list[dict] = field(default_factory=list)
    predictions: dict[str, list] = field(default_factory=dict)   # method -> test predictions (first seed)
    histories: dict[str, list] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ner: list[dict] = field(default_factory=list)                 # mention P/R/F1 of the NER head per encoder


def _flat(scores: dict) -> dict:
    out = {k: v for k, v in scores.items() if k != "per_type"}
    out.update({f"f1_{t}": v["f1"] for t, v in scores["per_type"].items()})
    out.update({f"r_{t}": v["r"] for t, v in scores["per_type"].items()})
    return out


def run_study(data: PreparedData, cfg: EventConfig, *, seeds: Sequence[int], variants: Sequence[Variant] | None = None,
              shared_encoder: bool = True, progress: bool = True,
              gold_mention_methods: Sequence[str] = (), dev_candidates: str | None = None) -> StudyResult:
    """Train and evaluate every variant for every seed on ``data``.

    ``shared_encoder=True`` trains the stage-1 encoder once (with the first seed) and reuses it
    for every seed, so the seeds vary the decoder only (the CPU budget); ``False`` retrains it
    per seed. Test documents are evaluated against their untruncated gold records.

    Each stage-1 encoder's NER head is scored on the dev split (mention strings, see
    :func:`~.metric.mention_scores`) into ``ner``. With ``cfg.candidates == "predicted"``, every
    method named in ``gold_mention_methods`` is also decoded (same trained decoder, no retraining)
    from the annotated test mentions and reported as ``"<method> (gold mentions)"``: the upper
    bound that a perfect entity head would give. ``dev_candidates`` (default: ``cfg.candidates``)
    sets the dev-split candidates on which each decoder's checkpoint and existence threshold are
    chosen: ``"gold"`` selects the decoder for decoding from annotated mentions (the synthetic
    sanity check, which asks whether the decoder recovers planted records from their mentions).
    """
    if dev_candidates is not None and dev_candidates not in CANDIDATES:
        raise ValueError(f"dev_candidates must be None or one of {CANDIDATES}, got {dev_candidates!r}")
    variants = list(variants or default_variants())
    schema, res = data.schema, StudyResult()
    gold_test = [d.records for d in data.full["test"]]
    enc = feats = None
    t_all = time.perf_counter()
    for si, seed in enumerate(seeds):
        if enc is None or not shared_encoder:
            t0 = time.perf_counter()
            enc = train_encoder(data.cut["train"], schema, cfg, seed=seed, progress=progress)
            res.seconds[f"encoder_seed{seed}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            kw = {"candidates": cfg.candidates, "min_mention_chars": cfg.min_mention_chars}
            feats = {"train": extract_features(enc, data.cut["train"], schema, candidates=cfg.train_candidates,
                                               min_mention_chars=cfg.min_mention_chars),
                     "dev": extract_features(enc, data.cut["dev"], schema,
                                             **{**kw, "candidates": dev_candidates or cfg.candidates}),
                     "test": extract_features(enc, data.cut["test"], schema, **kw)}
            if cfg.candidates == "predicted" and gold_mention_methods:
                feats["test_gold"] = extract_features(enc, data.cut["test"], schema, candidates="gold")
            res.seconds[f"features_seed{seed}"] = time.perf_counter() - t0
            found = predict_mentions(enc, data.cut["dev"], min_mention_chars=cfg.min_mention_chars)
            res.ner.append({"seed": seed, "split": "dev", **mention_scores(
                found, [d.mentions for d in data.cut["dev"]], gold_fields=[d.fields for d in data.cut["dev"]])})
        for v in variants:
            t0 = time.perf_counter()
            dec, info = train_decoder(feats["train"], schema, v, cfg, seed=seed, dev_feats=feats["dev"],
                                      dev_docs=data.full["dev"], d_in=enc.dim, num_fields=len(enc.labels),
                                      progress=progress)
            secs = time.perf_counter() - t0
            t0 = time.perf_counter()
            preds = decode(dec, feats["test"], schema, cfg)
            infer = time.perf_counter() - t0
            scores = evaluate_documents(preds, gold_test, schema)
            res.rows.append({"seed": seed, "method": v.name, **_flat(scores), "best_dev_f1": info["best_dev_f1"],
                             "train_seconds": secs, "infer_seconds": infer})
            for k, s in recall_by_event_count(preds, gold_test, schema).items():
                res.by_count.append({"seed": seed, "method": v.name, "n_events": k, "recall": s["r"],
                                     "f1": s["f1"], "n_docs": s["n_docs"]})
            if v.name in gold_mention_methods and "test_gold" in feats:
                gscores = evaluate_documents(decode(dec, feats["test_gold"], schema, cfg), gold_test, schema)
                res.rows.append({"seed": seed, "method": f"{v.name} (gold mentions)", **_flat(gscores),
                                 "best_dev_f1": info["best_dev_f1"], "train_seconds": secs, "infer_seconds": float("nan")})
            if si == 0:
                res.predictions[v.name] = preds
                res.histories[v.name] = info["history"]
    res.seconds["total"] = time.perf_counter() - t_all
    return res
