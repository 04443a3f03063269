"""The Study 04 design on prepared documents: encoders x decoder seeds x methods, as typed records.

:func:`run_design` returns :class:`Records`: one :class:`EncoderRecord` per stage-1 encoder (dev
mention P/R/F1 of each candidate set, per-epoch history), one :class:`DecoderRecord` per (method,
encoder seed, decoder seed, candidate set) test evaluation (the Doc2EDAG scores, per-document counts
for comparisons paired over documents, the dev choices), and one :class:`SearchRecord` per point of
the dev-tuned learning-rate search. :func:`frontend_step` trains one rung of the front-end ladder.
:mod:`.summary` turns the records into tables and :class:`~epi_utils.workbench.stats.Comparison`
verdicts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from epi_utils.events.config import RULE_GATES, EventConfig
from epi_utils.events.frontend import extract_features, predict_mentions, train_encoder, union_candidates
from epi_utils.events.methods import Variant, variants_for
from epi_utils.events.metric import document_stats, evaluate_documents, mention_scores, prf, recall_by_event_count
from epi_utils.events.prepare import PreparedData
from epi_utils.events.rules import RuleSet, build_rule_set
from epi_utils.events.training import decode, selection_key, train_decoder
from epi_utils.workbench.progress import format_duration, log_line

ANNOTATED = "annotated"   # candidate-set name of the upper bound: decoded from the annotated mentions


def silent(iterable: Iterable, **_) -> Iterable:
    """A ``progress`` callable that reports nothing (the synthetic check's inner runs)."""
    return iterable


@dataclass
class EncoderRecord:
    """One stage-1 encoder: dev mention scores per candidate set, per-epoch history, pretraining losses."""

    encoder_seed: int
    mention: dict[str, dict]               # candidate set -> mention P/R/F1 on dev (metric.mention_scores)
    history: list[dict]
    pretrain_losses: list[float]
    seconds: float
    step: str = "main"                     # front-end step name ("main" = the study's encoder)
    best_epoch: int = 0                    # the epoch kept (dev mention F1)
    max_epochs: int = 0                    # the most epochs allowed
    rule_gate: float | None = None         # least train precision of a used candidate rule (chosen on dev)
    gate_f1: dict = field(default_factory=dict)    # gate -> dev mention F1 of the union
    rules: list = field(default_factory=list)      # the rule patterns (RuleSet.table())

    @property
    def epochs(self) -> int:
        return len(self.history)


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
class Records:
    """Every record of one run of the design."""

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


def choose_rules(enc, data: PreparedData, cfg: EventConfig) -> RuleSet:
    """The rule patterns of ``enc``'s candidates, chosen on dev: the schema file's patterns always,
    and the candidate patterns (built-in ones with ``cfg.builtin_rules``, shapes learned from the
    training split's annotated mentions) whose precision on train reaches the gate of
    :data:`~.config.RULE_GATES` that gives the best dev mention F1 of the union (NER + rules; ties:
    the stricter gate). Sets ``enc.rule_patterns`` and returns the :class:`~.rules.RuleSet` (its
    ``gate`` and ``gate_f1``)."""
    rules = build_rule_set(data.cut["train"], user=dict(data.schema.patterns), builtin=cfg.builtin_rules)
    gold = [d.mentions for d in data.cut["dev"]]
    found = union_candidates(enc, data.cut["dev"], [rules.patterns(g) for g in RULE_GATES],
                             min_mention_chars=cfg.min_mention_chars)
    scores = {g: mention_scores(f, gold)["f1"] for g, f in zip(RULE_GATES, found)}
    rules.gate = max(RULE_GATES, key=lambda g: (scores[g], 2.0 if g is None else g))   # ties: the stricter gate
    rules.gate_f1 = scores
    enc.rule_patterns = rules.patterns()
    return rules


def encode_split(data: PreparedData, cfg: EventConfig, *, seed: int, step: str = "main",
                 test_candidates: Sequence[str] = (), log: Callable[[str], None] | None = None) -> _Encoded:
    """Train one stage-1 encoder (pretraining on every split's text, dev-chosen epoch), choose its
    rule patterns on dev (:func:`choose_rules`), score its candidate sets on dev, and extract the
    frozen features: ``train`` (``cfg.train_candidates``),
    ``dev`` (``cfg.candidates``), ``dev_annotated``, ``test`` (``cfg.candidates``), ``test_annotated``
    and ``test_<c>`` for every extra candidate set in ``test_candidates``. ``log`` receives one line
    per encoder epoch."""
    t0 = time.perf_counter()
    unlabeled = data.cut["train"] + data.cut["dev"] + data.cut["test"]
    enc = train_encoder(data.cut["train"], data.schema, cfg, seed=seed, unlabeled=unlabeled,
                        dev_docs=data.cut["dev"], log=log)
    rules = choose_rules(enc, data, cfg)
    kw = {"min_mention_chars": cfg.min_mention_chars}
    mention = {}
    for c in dict.fromkeys(("predicted", "rules", "union", cfg.candidates)):
        found = predict_mentions(enc, data.cut["dev"], candidates=c, **kw)
        mention[c] = mention_scores(found, [d.mentions for d in data.cut["dev"]],
                                    gold_fields=[d.fields for d in data.cut["dev"]])
    s = data.schema
    feats = {"train": (extract_features(enc, data.cut["train"], s, candidates="gold") if cfg.train_candidates == "gold"
                       else extract_features(enc, data.cut["train"], s, candidates="union", add_gold=True,
                                            predicted_fields=cfg.train_fields == "predicted", **kw)),
             "dev": extract_features(enc, data.cut["dev"], s, candidates=cfg.candidates, **kw),
             "dev_annotated": extract_features(enc, data.cut["dev"], s, candidates="gold"),
             "test": extract_features(enc, data.cut["test"], s, candidates=cfg.candidates, **kw),
             "test_annotated": extract_features(enc, data.cut["test"], s, candidates="gold")}
    for c in test_candidates:
        if c != cfg.candidates and f"test_{c}" not in feats:
            feats[f"test_{c}"] = extract_features(enc, data.cut["test"], s, candidates=c, **kw)
    rec = EncoderRecord(seed, mention, list(getattr(enc, "history", [])), list(getattr(enc, "pretrain_losses", [])),
                        time.perf_counter() - t0, step, getattr(enc, "best_epoch", 0), getattr(enc, "max_epochs", 0),
                        rules.gate, dict(rules.gate_f1), rules.table())
    return _Encoded(enc, feats, rec)


def _evaluate(res: Records, data: PreparedData, cfg: EventConfig, dec, info, *, method: str, enc_seed: int,
              dec_seed: int, feats: list[dict], candidates: str, secs: float, step: str, lr: float) -> list:
    gold = [d.records for d in data.full["test"]]
    preds = decode(dec, feats, data.schema, cfg)
    dev = {k: info.get(k) for k in ("best_dev_f1", "best_dev_f1_annotated", "best_epoch", "last_epoch", "max_epochs",
                                    "exist_threshold", "type_gate")}
    dev["dec_lr"] = lr
    res.decoders.append(DecoderRecord(method, enc_seed, dec_seed, candidates, _flat(evaluate_documents(preds, gold, data.schema)),
                                      _doc_counts(preds, gold, data.schema), dev, secs, step))
    return preds


def _train(encoded: _Encoded, data: PreparedData, variant: Variant, cfg: EventConfig, seed: int):
    t0 = time.perf_counter()
    dec, info = train_decoder(encoded.feats["train"], data.schema, variant, cfg, seed=seed,
                              dev_feats=encoded.feats["dev"], dev_docs=data.full["dev"],
                              dev_gold_feats=encoded.feats["dev_annotated"], d_in=encoded.enc.dim,
                              num_fields=len(encoded.enc.labels))
    return dec, info, time.perf_counter() - t0


def run_design(data: PreparedData, cfg: EventConfig, *, progress: Callable = silent,
               log: Callable[[str], None] = log_line, extra_candidates: Sequence[str] = ("predicted", "rules")) -> Records:
    """Every method of ``cfg.methods`` over ``cfg.encoder_seeds`` x ``cfg.decoder_seeds`` seeds on ``data``.

    Encoder seeds are ``cfg.seed + i`` (each encoder pretrained and trained with its own seed);
    decoder seeds ``cfg.seed + 100 * (i + 1) + j``. With ``cfg.dec_lr_grid`` every method first gets
    the same search over decoder learning rates on the first encoder and decoder seed, chosen by the
    dev :func:`~.training.selection_key`; the chosen rate is used for all seeds. Every trained decoder
    is evaluated on the test split from the study's candidates (``cfg.candidates``) and from the
    annotated mentions (the upper bound, candidate set ``"annotated"``); the decoders of the first
    encoder are also evaluated on ``extra_candidates`` (the front-end steps, end to end).
    ``progress`` wraps the loop over trained decoders (the units of work); ``log`` receives one line
    per encoder and per trained decoder.
    """
    res = Records()
    variants = variants_for(cfg.methods)
    gold_test = [d.records for d in data.full["test"]]
    t_all = time.perf_counter()
    chosen_lr: dict[str, float] = {}
    n_dec = cfg.encoder_seeds * cfg.decoder_seeds * len(variants)
    dec_secs: list[float] = []
    for i in range(cfg.encoder_seeds):
        enc_seed = cfg.seed + i
        encoded = encode_split(data, cfg, seed=enc_seed, test_candidates=extra_candidates if i == 0 else (), log=log)
        res.encoders.append(encoded.record)
        res.seconds[f"encoder_{enc_seed}"] = encoded.record.seconds
        m, e = encoded.record.mention[cfg.candidates], encoded.record
        log(f"study 04 encoder {i + 1}/{cfg.encoder_seeds} (seed {enc_seed}): dev mention P {m['p']:.3f} R {m['r']:.3f} "
            f"F1 {m['f1']:.3f} ({cfg.candidates} candidates; epoch {e.best_epoch} kept of {e.epochs} trained, at most "
            f"{e.max_epochs}; rule gate {e.rule_gate}, {sum(r['used'] for r in e.rules)} of {len(e.rules)} patterns used), "
            f"{e.seconds:.0f} s")
        units = [(j, v) for j in range(cfg.decoder_seeds) for v in variants]
        for j, v in progress(units, desc=f"study 04 decoders of encoder {i + 1}/{cfg.encoder_seeds}", unit="trained"):
            _decoder_unit(res, data, cfg, encoded, i, j, v, enc_seed, chosen_lr, extra_candidates, gold_test, log,
                          dec_secs, n_dec, [r.seconds for r in res.encoders])
    res.seconds["decoders"] = float(sum(dec_secs))  # every trained decoder (a part of the total)
    res.seconds["total"] = time.perf_counter() - t_all
    return res


def _decoder_unit(res, data, cfg, encoded, i, j, v, enc_seed, chosen_lr, extra_candidates, gold_test, log,
                  dec_secs, n_dec, enc_secs) -> None:
    """Train (with the learning-rate search the first time a method comes), evaluate and log one
    decoder unit of :func:`run_design`; the log line's ETA counts the decoders and encoders left,
    each at the mean time of those done."""
    t_unit = time.perf_counter()
    dec_seed = cfg.seed + 100 * (i + 1) + j
    if v.name not in chosen_lr:   # the dev-tuned search, same grid for every method
        found = []
        for lr in cfg.dec_lr_grid or (cfg.dec_lr,):
            dec, info, secs = _train(encoded, data, v, cfg.replace(dec_lr=lr), dec_seed)
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
        dec, info, secs = _train(encoded, data, v, cfg.replace(dec_lr=lr), dec_seed)
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
    dec_secs.append(time.perf_counter() - t_unit)
    left_dec = n_dec - len(dec_secs)
    left_enc = cfg.encoder_seeds - len(enc_secs)
    eta = left_dec * float(np.mean(dec_secs)) + left_enc * float(np.mean(enc_secs))
    log(f"study 04 decoder {len(dec_secs)}/{n_dec} {v.name} enc {enc_seed} dec {dec_seed}: test micro F1 "
        f"{last.scores['micro_f1']:.3f}, dev F1 {info['best_dev_f1']:.3f} (epoch {info['best_epoch']} kept of "
        f"{info['last_epoch']} trained, at most {info['max_epochs']}; lr {lr:g}, threshold {info['exist_threshold']}, "
        f"gate {info['type_gate']}), {secs:.0f} s; ETA {format_duration(eta)} ({left_dec} decoders, {left_enc} encoders left)")


def frontend_step(data: PreparedData, cfg: EventConfig, *, step: str, seed: int, method: str = "probes",
                  candidate_sets: Sequence[str] = ("predicted", "rules", "union"),
                  log: Callable[[str], None] | None = log_line) -> tuple[EncoderRecord, list[DecoderRecord]]:
    """One rung of the front-end ladder: an encoder trained with ``cfg`` (its dev mention scores per
    candidate set) and one ``method`` decoder, evaluated on the test split from ``cfg.candidates``
    and from every set in ``candidate_sets`` (records tagged ``step``, one per candidate set)."""
    res = Records()
    encoded = encode_split(data, cfg, seed=seed, step=step, test_candidates=candidate_sets, log=log)
    dec, info, secs = _train(encoded, data, variants_for([method])[0], cfg, seed)
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
