"""Stage 1, the entity front end: encoder training, candidate mentions and frozen features.

:func:`train_encoder` trains the :class:`~.encoder.DocumentEncoder` (optionally after
masked-character pretraining on every document's text, :mod:`.pretrain`) on entity tagging (BIO
over entity fields) and event-type detection, as Doc2EDAG's front end does (Zheng et al., EMNLP
2019); with dev documents it keeps the epoch with the best dev mention F1. Loss: BIO-field token
cross-entropy + ``ner_boundary_weight`` x the field-agnostic O/B/I cross-entropy (:func:`ner_loss`)
+ document-level type BCE + ``sentence_type_weight`` x the sentence-level type BCE.

Candidate sets (:func:`candidate_mentions`): ``"predicted"`` the NER head's spans of at least
``min_mention_chars`` characters; ``"rules"`` the value patterns of :mod:`.rules` (their field read
from the NER head's tag probabilities); ``"union"`` both (NER field wins); ``"gold"`` the annotated
mentions. For decoder training (``train_candidates="union"``) the annotated mentions are added to
the union, so that the decoder sees the spurious candidates it meets at test time and learns to
leave them unused (like Doc2EDAG's scheduled sampling of predicted entities).
"""
from __future__ import annotations

import copy
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from epi_utils.events.config import CANDIDATES, EventConfig
from epi_utils.events.data import Document
from epi_utils.events.encoder import CharVocab, DocumentEncoder, sinusoid
from epi_utils.events.metric import mention_scores
from epi_utils.events.pretrain import pretrain_characters
from epi_utils.events.rules import merge_candidates, rule_mentions
from epi_utils.events.schedule import Plateau, epoch_scale
from epi_utils.events.schema import EventSchema
from epi_utils.workbench.progress import progress_line


def batches(n: int, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches of ``size`` over ``n`` items (shuffled with ``rng``, in order without)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


def ner_loss(logits: torch.Tensor, tags: torch.Tensor, *, boundary_weight: float = 1.0) -> torch.Tensor:
    """Token cross-entropy over the ``1 + 2K`` BIO-field tags (``logits [B, L, 1 + 2K]``, ``tags [B, L]``,
    -100 ignored) plus ``boundary_weight`` times the cross-entropy of the field-agnostic boundary
    (O / B / I, each the log-sum of its field tags' probabilities): the quantity the span decoder
    (:meth:`~.encoder.DocumentEncoder.decode_mentions`) reads, trained directly."""
    logits, tags = logits.flatten(0, 1), tags.flatten()
    loss = F.cross_entropy(logits, tags, ignore_index=-100)
    if boundary_weight > 0:
        logp = logits.log_softmax(-1)
        bnd = torch.stack([logp[:, 0], logp[:, 1::2].logsumexp(-1), logp[:, 2::2].logsumexp(-1)], -1)
        btag = torch.where(tags <= 0, tags, 2 - tags % 2)                         # O 0, B 1, I 2, pad -100
        loss = loss + boundary_weight * F.nll_loss(bnd, btag, ignore_index=-100)
    return loss


def build_encoder(docs: Sequence[Document], schema: EventSchema, cfg: EventConfig, *,
                  unlabeled: Sequence[Document] = ()) -> DocumentEncoder:
    """A fresh encoder whose character vocabulary covers ``docs`` and ``unlabeled`` text and whose
    entity fields are the schema's plus those annotated in ``docs``."""
    labels = sorted(set(schema.all_fields()) | {f for d in docs for f in d.fields.values() if f})
    return DocumentEncoder(CharVocab.build(list(docs) + list(unlabeled)), labels, schema.num_types, dim=cfg.dim,
                           layers=cfg.enc_layers, heads=cfg.heads, max_len=cfg.max_sentence_chars,
                           max_sentences=cfg.max_sentences, dropout=cfg.dropout, hf_name=cfg.hf_encoder,
                           bigram_buckets=cfg.bigram_buckets, lstm=cfg.enc_lstm).to(cfg.torch_device)


def _encoder_step(enc: DocumentEncoder, batch: Sequence[Document], schema: EventSchema, cfg: EventConfig) -> torch.Tensor:
    X, xm, sv, sm, starts, seg = enc.encode(batch)
    tags = enc.tag_targets(batch, starts, X.shape[1]).to(X.device)
    loss = ner_loss(enc.ner(X), tags, boundary_weight=cfg.ner_boundary_weight)
    y = torch.zeros(len(batch), schema.num_types, device=X.device)
    for b, d in enumerate(batch):
        for etype, _ in d.records:
            y[b, schema.type_index(etype)] = 1.0
    ss = enc.sentence_type_scores(X, xm, seg, sv.shape[1], enc.ngram_ids(batch, X.shape[1]))
    loss = loss + F.binary_cross_entropy_with_logits(enc.type_logits(ss, sm), y)
    if cfg.sentence_type_weight > 0:
        ys = enc.sentence_type_targets(batch, schema.event_types, sv.shape[1]).to(X.device)
        ls = F.binary_cross_entropy_with_logits(ss, ys, reduction="none")
        loss = loss + cfg.sentence_type_weight * (ls * sm.unsqueeze(-1)).sum() / sm.sum().clamp(min=1)
    return loss


def train_encoder(docs: Sequence[Document], schema: EventSchema, cfg: EventConfig, *, seed: int,
                  unlabeled: Sequence[Document] = (), dev_docs: Sequence[Document] | None = None,
                  max_steps: int | None = None, log=None) -> DocumentEncoder:
    """Stage 1: (masked-character pretraining on ``docs`` + ``unlabeled`` text for
    ``cfg.pretrain_epochs``, character Transformer only) then NER + event-type detection on ``docs``
    for at most ``cfg.enc_epochs`` scheduled epochs (OneCycle learning rate over that maximum). On a
    data set with fewer than ``cfg.enc_epoch_steps`` batches a scheduled epoch is several passes
    (:func:`~.schedule.epoch_scale`): the most passes and the patience scale with it.

    With ``dev_docs`` the dev mention P/R/F1 of the NER head (:func:`~.metric.mention_scores`) is
    measured after every epoch, training stops after ``cfg.enc_patience`` epochs without a better
    one (:class:`~.schedule.Plateau`) and the best epoch's weights are kept. The returned encoder
    carries ``history`` (per epoch: loss, dev mention scores), ``best_epoch``, ``max_epochs`` and
    ``pretrain_losses``. ``max_steps`` stops
    early (the GPU rehearsal's few timed steps). ``log`` (a callable) receives one line per epoch.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = build_encoder(docs, schema, cfg, unlabeled=unlabeled)
    enc.pretrain_losses = []
    if cfg.pretrain_epochs and not cfg.hf_encoder:
        seen = {d.doc_id for d in docs}
        text_docs = list(docs) + [d for d in unlabeled if d.doc_id not in seen]
        enc.pretrain_losses = pretrain_characters(enc.sent, text_docs, epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr,
                                                  seed=seed)
    lex = [enc.type_lex.weight]
    rest = [p for n, p in enc.named_parameters() if n != "type_lex.weight"]
    # the lexical bag-of-n-grams table is a linear model over sparse features: 10x the learning rate
    opt = torch.optim.AdamW([{"params": rest}, {"params": lex, "weight_decay": 0.0}], lr=cfg.enc_lr)
    scale = epoch_scale(n_items=max(1, len(docs)), batch=cfg.enc_batch, epoch_steps=cfg.enc_epoch_steps)
    max_epochs = cfg.enc_epochs * scale
    steps = max(1, max_epochs * len(batches(len(docs), cfg.enc_batch, None)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.enc_lr, 10 * cfg.enc_lr], total_steps=steps,
                                                pct_start=0.1)
    history, best, best_state, done, t0 = [], -1.0, None, 0, time.perf_counter()
    plateau = Plateau(patience=cfg.enc_patience * scale, max_checks=max(1, max_epochs))
    enc.best_epoch = 0
    for epoch in range(1, max_epochs + 1):
        enc.train()
        tot = 0.0
        for idx in batches(len(docs), cfg.enc_batch, rng):
            loss = _encoder_step(enc, [docs[i] for i in idx], schema, cfg)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
            opt.step()
            sched.step()
            tot += float(loss.detach())
            done += 1
            if max_steps is not None and done >= max_steps:
                break
        row = {"epoch": epoch, "loss": tot}
        if dev_docs is not None:
            found = predict_mentions(enc, dev_docs, min_mention_chars=cfg.min_mention_chars)
            s = mention_scores(found, [d.mentions for d in dev_docs])
            row.update({"dev_mention_p": s["p"], "dev_mention_r": s["r"], "dev_mention_f1": s["f1"]})
            if s["f1"] > best:
                best, best_state, enc.best_epoch = s["f1"], copy.deepcopy(enc.state_dict()), epoch
        history.append(row)
        stop = dev_docs is not None and plateau.update(row["dev_mention_f1"])
        if log is not None:
            dev = f", dev mention F1 {row['dev_mention_f1']:.3f} (best epoch {enc.best_epoch})" if "dev_mention_f1" in row else ""
            log(progress_line(f"encoder seed {seed} epochs (at most)", done=epoch, total=max_epochs,
                              elapsed=time.perf_counter() - t0, unit="done") + f"; loss {tot:.1f}{dev}"
                + ("; dev plateau, stopped" if stop and plateau.plateaued else ""))
        if stop or (max_steps is not None and done >= max_steps):
            break
    if best_state is not None:
        enc.load_state_dict(best_state)
    enc.history = history
    enc.max_epochs = max_epochs
    return enc.eval()


@torch.no_grad()
def predict_mentions(enc: DocumentEncoder, docs: Sequence[Document], *, batch: int = 16,
                     min_mention_chars: int = 1, candidates: str = "predicted") -> list[dict]:
    """Candidate mentions per document, ``{mention: (field, [(s, a, b), ...])}``, of a candidate set
    (module docstring; ``"gold"`` returns the annotated mentions with their fields)."""
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
    enc.eval()
    found = []
    for i in range(0, len(docs), batch):
        part = docs[i:i + batch]
        if candidates == "gold":
            found.extend({m: (d.fields.get(m, ""), rg) for m, rg in d.mentions.items()} for d in part)
            continue
        X, _, _, _, starts, _ = enc.encode(part)
        found.extend(_candidates(enc, part, enc.ner(X), starts, candidates, min_mention_chars))
    return found


def _candidates(enc, part, tag_logits, starts, candidates, min_chars):
    ner = (enc.decode_mentions(part, tag_logits, starts, min_chars=min_chars)
           if candidates in ("predicted", "union") else [{} for _ in part])
    if candidates == "predicted":
        return ner
    out = []
    for b, d in enumerate(part):
        rules = rule_mentions(d.sentences, patterns=getattr(enc, "rule_patterns", None))
        fld = enc.span_fields(tag_logits[b], starts[b], rules)
        out.append(merge_candidates(ner[b], {m: (fld[m], spans) for m, (_, spans) in rules.items()}))
    return out


@torch.no_grad()
def union_candidates(enc: DocumentEncoder, docs: Sequence[Document], pattern_sets: Sequence[dict], *, batch: int = 16,
                     min_mention_chars: int = 1) -> list[list[dict]]:
    """The ``"union"`` candidates of ``docs`` for each rule pattern set of ``pattern_sets`` (one list
    of per-document candidate dicts per set), the encoder run once per batch."""
    enc.eval()
    saved = getattr(enc, "rule_patterns", None)
    out: list[list[dict]] = [[] for _ in pattern_sets]
    try:
        for i in range(0, len(docs), batch):
            part = docs[i:i + batch]
            X, _, _, _, starts, _ = enc.encode(part)
            logits = enc.ner(X)
            for k, pats in enumerate(pattern_sets):
                enc.rule_patterns = pats
                out[k].extend(_candidates(enc, part, logits, starts, "union", min_mention_chars))
    finally:
        enc.rule_patterns = saved
    return out


@torch.no_grad()
def extract_features(enc: DocumentEncoder, docs: Sequence[Document], schema: EventSchema, *,
                     candidates: str, batch: int = 16, min_mention_chars: int = 1, add_gold: bool = False,
                     predicted_fields: bool = False
                     ) -> list[dict]:
    """Frozen stage-1 features per document for one candidate set (``add_gold``: plus the annotated
    mentions, annotation's field wins unless ``predicted_fields``, where the NER head's field of a
    candidate it found wins, as at test time; the decoder's ``"union"`` training candidates).

    Each dict: ``sent [S, d + T]``, ``ment [M, 2d + T]`` (mean over the mention's spans of
    ``[span mean character vector ; its sentence's vector + a sinusoidal code of the sentence index ;
    the stage-1 detector's per-type scores of that sentence]``), ``field [M]`` (entity-field id,
    0 unknown), ``strings`` (the M mention texts), ``type_prob [T]``, ``gold``: per type a
    ``[G, R]`` long tensor of candidate indices (-1 = empty or unreachable slot), ``doc_id``.
    """
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
    enc.eval()
    feats = []
    for i in range(0, len(docs), batch):
        part = docs[i:i + batch]
        X, xm, sv, sm, starts, seg = enc.encode(part)
        tsent = enc.sentence_type_scores(X, xm, seg, sv.shape[1], enc.ngram_ids(part, X.shape[1]))  # [B, S, T]
        tprob = torch.sigmoid(enc.type_logits(tsent, sm)).cpu()
        gold_found = [{m: (d.fields.get(m, ""), rg) for m, rg in d.mentions.items()} for d in part]
        if candidates == "gold":
            found = gold_found
        else:
            found = _candidates(enc, part, enc.ner(X), starts, candidates, min_mention_chars)
            if add_gold:   # the first source's field wins
                found = [merge_candidates(f, g) if predicted_fields else merge_candidates(g, f)
                         for f, g in zip(found, gold_found)]
        cs = torch.cat([X.new_zeros(X.shape[0], 1, X.shape[2]), X.cumsum(1)], 1)
        for b, (d, st) in enumerate(zip(part, starts)):
            strings = list(found[b])
            vecs = []
            for m in strings:
                spans = found[b][m][1]
                v = torch.stack([(cs[b, st[s] + e] - cs[b, st[s] + a]) / (e - a) for s, a, e in spans])
                sidx = [s for s, _, _ in spans]
                ctx = sv[b, sidx] + sinusoid(torch.tensor(sidx), enc.dim).to(v.device)
                vecs.append(torch.cat([v, ctx, tsent[b, sidx]], -1).mean(0))
            ment = torch.stack(vecs).cpu() if vecs else torch.zeros(0, 2 * enc.dim + schema.num_types)
            field_ids = torch.tensor([enc.labels.index(found[b][m][0]) + 1 if found[b][m][0] in enc.labels else 0
                                      for m in strings], dtype=torch.long)
            pos = {m: j for j, m in enumerate(strings)}
            gold = []
            for recs in d.records_by_type(schema):
                g = torch.full((len(recs), schema.max_roles), -1, dtype=torch.long)
                for j, args in enumerate(recs):
                    for r, a in enumerate(args):
                        if a is not None and a in pos:
                            g[j, r] = pos[a]
                gold.append(g)
            feats.append({"sent": torch.cat([sv[b], tsent[b]], -1)[:len(d.sentences)].cpu(), "ment": ment,
                          "field": field_ids, "strings": strings, "type_prob": tprob[b], "gold": gold,
                          "doc_id": d.doc_id})
    return feats
