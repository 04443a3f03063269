"""Two-stage training, feature extraction and decoding for document-level event extraction.

Stage 1 (:func:`train_encoder`): the :class:`~.encoder.DocumentEncoder` learns entity tagging
(BIO over entity fields) and event-type detection, as Doc2EDAG's front end does. Stage 2
(:func:`train_decoder`): with the stage-1 encoder frozen, a :class:`~.probes.RecordDecoder` learns
to decode records from candidate mentions (gold mentions while training, as Doc2EDAG's teacher
forcing; predicted mentions from the NER head at test time by default, or gold mentions with
``candidates="gold"``). Freezing the encoder lets every decoder variant of a seed share exactly
the same encoder and candidates, so variants differ only in the decoder and its losses; it is
also what makes 5 variants x 3 seeds fit the CPU budget.

Stage-1 loss: BIO-field token cross-entropy + ``ner_boundary_weight`` x the field-agnostic O/B/I
cross-entropy (:func:`ner_loss`) + document-level type BCE + ``sentence_type_weight`` x the
sentence-level type BCE (see :mod:`.encoder` for why). Candidates at test time are the NER head's
spans of at least ``min_mention_chars`` characters (default 3: ChFinAnn has no one-character
mention and 1.2% of its training mentions have two characters, while short spans are mostly
fragments; on the dev split this raised mention precision at no measurable recall cost).
``train_candidates="union"`` trains the decoder on predicted spans plus the annotated mentions
(the model sees the spurious candidates it meets at test time, like Doc2EDAG's scheduled
sampling of predicted entities), ``"gold"`` on annotated mentions only (teacher forcing).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, asdict, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .alignment import assign, best_record
from .data import Document
from .encoder import CharVocab, DocumentEncoder, sinusoid
from .losses import slot_nll, supcon
from .metric import evaluate_documents
from .probes import RecordDecoder
from .schema import EventSchema

CANDIDATES = ("predicted", "gold")
TRAIN_CANDIDATES = ("gold", "union")
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)


@dataclass
class EventConfig:
    """Every option of the pipeline (keyword-only; :meth:`validate` names a bad one)."""

    dim: int = 64                 # stage-1 hidden size
    enc_layers: int = 2           # Transformer layers of the sentence encoder
    heads: int = 4                # attention heads (stage 1 and 2)
    dropout: float = 0.1
    max_sentence_chars: int = 128 # characters kept per sentence
    max_sentences: int = 24       # sentences kept per document
    enc_epochs: int = 4
    enc_lr: float = 2e-3
    enc_batch: int = 8            # documents per stage-1 batch
    ner_boundary_weight: float = 1.0  # weight of the field-agnostic O/B/I loss of the NER head
    sentence_type_weight: float = 1.0  # weight of the sentence-level type loss (stage 1)
    min_mention_chars: int = 3    # predicted spans shorter than this are dropped (fragments; see module doc)
    hf_encoder: str = ""          # Hugging Face encoder id instead of the character Transformer
    hidden: int = 64              # stage-2 hidden size
    dec_layers: int = 2
    num_probes: int = 8           # probes (records) per event type
    dec_epochs: int = 20
    dec_lr: float = 2e-3
    dec_batch: int = 16
    rc_weight: float = 0.1        # role contrastive loss weight (when a variant uses it)
    pc_weight: float = 0.1        # probe consistency loss weight (when a variant uses it)
    temperature: float = 0.1
    exist_threshold: float = 0.5  # record-existence probability threshold (the start value if tuned)
    tune_threshold: bool = True   # choose the existence threshold on the dev split (THRESHOLDS)
    type_gate: bool = True        # only decode types the stage-1 detector predicts
    candidates: str = "predicted" # test-time candidates: "predicted" (NER head) or "gold"
    train_candidates: str = "gold"  # decoder training candidates: "gold" or "union" (predicted + gold)
    eval_every: int = 5           # dev evaluation period (epochs) for keeping the best decoder
    anchor_probes: bool = True    # start each probe from a ranked candidate (see probes.py)
    device: str = "cpu"

    def validate(self) -> "EventConfig":
        for name in ("dim", "enc_layers", "heads", "max_sentence_chars", "max_sentences", "enc_batch",
                     "hidden", "dec_layers", "num_probes", "dec_batch", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("enc_epochs", "dec_epochs", "rc_weight", "pc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.dim % self.heads or self.hidden % self.heads:
            raise ValueError(f"dim ({self.dim}) and hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.candidates not in CANDIDATES:
            raise ValueError(f"candidates must be one of {CANDIDATES}, got {self.candidates!r}")
        if self.train_candidates not in TRAIN_CANDIDATES:
            raise ValueError(f"train_candidates must be one of {TRAIN_CANDIDATES}, got {self.train_candidates!r}")
        if not 0 < self.exist_threshold < 1:
            raise ValueError(f"exist_threshold must be in (0, 1), got {self.exist_threshold}")
        return self


@dataclass(frozen=True)
class Variant:
    """A decoder variant: probes or shared decoder, alignment mode, and which extra losses."""

    name: str
    probe_mode: str = "event_specific"
    alignment: str = "hungarian"
    role_contrastive: bool = True
    probe_consistency: bool = True


def default_variants() -> list[Variant]:
    """The method, the no-probe baseline and the three ablations of the study."""
    return [Variant("probes"),
            Variant("no_probe", probe_mode="shared", role_contrastive=False, probe_consistency=False),
            Variant("wo_alignment", alignment="fixed"),
            Variant("wo_role_contrastive", role_contrastive=False),
            Variant("wo_probe_consistency", probe_consistency=False)]


def _batches(n: int, size: int, rng: np.random.Generator | None):
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


def train_encoder(docs: Sequence[Document], schema: EventSchema, cfg: EventConfig, *, seed: int,
                  progress: bool = False) -> DocumentEncoder:
    """Stage 1: NER (token cross-entropy) + event-type detection (binary cross-entropy per type)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    labels = sorted(set(schema.all_fields()) | {f for d in docs for f in d.fields.values() if f})
    enc = DocumentEncoder(CharVocab.build(docs), labels, schema.num_types, dim=cfg.dim, layers=cfg.enc_layers,
                          heads=cfg.heads, max_len=cfg.max_sentence_chars, max_sentences=cfg.max_sentences,
                          dropout=cfg.dropout, hf_name=cfg.hf_encoder).to(cfg.device)
    lex = [enc.type_lex.weight]
    rest = [p for n, p in enc.named_parameters() if n != "type_lex.weight"]
    # the lexical bag-of-n-grams table is a linear model over sparse features: 10x the learning rate
    opt = torch.optim.AdamW([{"params": rest}, {"params": lex, "weight_decay": 0.0}], lr=cfg.enc_lr)
    steps = max(1, cfg.enc_epochs * len(_batches(len(docs), cfg.enc_batch, None)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.enc_lr, 10 * cfg.enc_lr], total_steps=steps,
                                                pct_start=0.1)
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, desc=f"encoder seed {seed}", disable=not progress, leave=False)
    enc.train()
    for _ in range(cfg.enc_epochs):
        for idx in _batches(len(docs), cfg.enc_batch, rng):
            batch = [docs[i] for i in idx]
            X, xm, sv, sm, starts, seg = enc.encode(batch)
            tags = enc.tag_targets(batch, starts, X.shape[1]).to(X.device)
            ner = ner_loss(enc.ner(X), tags, boundary_weight=cfg.ner_boundary_weight)
            y = torch.zeros(len(batch), schema.num_types, device=X.device)
            for b, d in enumerate(batch):
                for etype, _ in d.records:
                    y[b, schema.type_index(etype)] = 1.0
            ss = enc.sentence_type_scores(X, xm, seg, sv.shape[1], enc.ngram_ids(batch, X.shape[1]))
            loss = ner + F.binary_cross_entropy_with_logits(enc.type_logits(ss, sm), y)
            if cfg.sentence_type_weight > 0:
                ys = enc.sentence_type_targets(batch, schema.event_types, sv.shape[1]).to(X.device)
                ls = F.binary_cross_entropy_with_logits(ss, ys, reduction="none")
                loss = loss + cfg.sentence_type_weight * (ls * sm.unsqueeze(-1)).sum() / sm.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return enc.eval()


@torch.no_grad()
def predict_mentions(enc: DocumentEncoder, docs: Sequence[Document], *, batch: int = 16,
                     min_mention_chars: int = 1) -> list[dict]:
    """The NER head's candidate mentions per document: ``{mention: (field, [(s, a, b), ...])}``."""
    enc.eval()
    found = []
    for i in range(0, len(docs), batch):
        part = docs[i:i + batch]
        X, _, _, _, starts, _ = enc.encode(part)
        found.extend(enc.decode_mentions(part, enc.ner(X), starts, min_chars=min_mention_chars))
    return found


@torch.no_grad()
def extract_features(enc: DocumentEncoder, docs: Sequence[Document], schema: EventSchema, *,
                     candidates: str, batch: int = 16, min_mention_chars: int = 1) -> list[dict]:
    """Frozen stage-1 features per document.

    Each dict: ``sent [S, d]``, ``ment [M, 2d]`` (mean over the mention's spans of
    ``[span mean character vector ; its sentence's vector + a sinusoidal code of the sentence index ;
    the stage-1 detector's per-type attention scores of that sentence]``, so a candidate knows its
    sentence context, position and event-type evidence; ``sent`` carries the same type scores), ``field [M]`` (entity-field id,
    0 unknown), ``strings`` (the M mention texts), ``type_prob [T]``, ``gold``: per type a
    ``[G, R]`` long tensor of candidate indices (-1 = empty or unreachable slot), ``ner``: the
    candidate mentions found (predicted) or given (gold).
    """
    if candidates not in CANDIDATES + ("union",):
        raise ValueError(f"candidates must be one of {CANDIDATES + ('union',)}, got {candidates!r}")
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
            found = enc.decode_mentions(part, enc.ner(X), starts, min_chars=min_mention_chars)
            if candidates == "union":  # predicted spans plus every annotated mention (annotation wins)
                found = [{**f, **g} for f, g in zip(found, gold_found)]
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
            for recs, roles in zip(d.records_by_type(schema), schema.roles):
                g = torch.full((len(recs), schema.max_roles), -1, dtype=torch.long)
                for j, args in enumerate(recs):
                    for r, a in enumerate(args):
                        if a is not None and a in pos:
                            g[j, r] = pos[a]
                gold.append(g)
            feats.append({"sent": torch.cat([sv[b], tsent[b]], -1)[:len(d.sentences)].cpu(), "ment": ment, "field": field_ids,
                          "strings": strings,
                          "type_prob": tprob[b], "gold": gold, "doc_id": d.doc_id})
    return feats


def collate(feats: Sequence[dict], device) -> dict:
    """Pad a list of feature dicts into batch tensors (M is at least 1; padding is masked)."""
    B, d, dm = len(feats), feats[0]["sent"].shape[-1], feats[0]["ment"].shape[-1]
    S = max(1, max(f["sent"].shape[0] for f in feats))
    M = max(1, max(f["ment"].shape[0] for f in feats))
    sent, ment = torch.zeros(B, S, d), torch.zeros(B, M, dm)
    sm, mm = torch.zeros(B, S, dtype=torch.bool), torch.zeros(B, M, dtype=torch.bool)
    field_ids = torch.zeros(B, M, dtype=torch.long)
    for b, f in enumerate(feats):
        s, m = f["sent"].shape[0], f["ment"].shape[0]
        sent[b, :s], sm[b, :s] = f["sent"], True
        ment[b, :m], mm[b, :m], field_ids[b, :m] = f["ment"], True, f["field"]
    sm[:, 0] = True  # an empty document keeps one (zero) sentence so attention stays defined
    out = {"sent": sent, "sent_mask": sm, "ment": ment, "ment_mask": mm, "ment_field": field_ids}
    return {k: v.to(device) for k, v in out.items()}


def decoder_loss(out: dict, feats: Sequence[dict], dec: RecordDecoder, variant: Variant, cfg: EventConfig):
    """Alignment + slot NLL + existence BCE (+ role contrastive, + probe consistency). Returns a dict."""
    logp, exist, P, z = out["logp"], out["exist"], out["P"], out["z"]
    B, T, K, R, M1 = logp.shape
    null = M1 - 1
    ex_t = torch.zeros_like(exist)
    sel, tgt, roles_t, pc_terms = [], [], [], []
    for b, f in enumerate(feats):
        for t in range(T):
            g = f["gold"][t]
            if g.shape[0] == 0:
                continue
            g = g.to(logp.device)
            g = torch.where(g < 0, torch.full_like(g, null), g)[:, :R]           # [G, R]
            rmask = dec.role_mask[t]
            with torch.no_grad():
                lp = logp[b, t].gather(2, g.T.unsqueeze(0).expand(K, -1, -1))     # [K, R, G]
                ll = (lp * rmask[None, :, None]).sum(1) / rmask.sum()
                cost = (-ll - F.logsigmoid(exist[b, t]).unsqueeze(1)).cpu().numpy()
            for k, j in assign(cost, mode=variant.alignment):
                sel.append((b, t, k)); tgt.append(g[j]); roles_t.append(t)
                ex_t[b, t, k] = 1.0
            if variant.probe_consistency and g.shape[0] >= 2:
                pc_terms.append(supcon(P[b, t], torch.as_tensor(best_record(cost), device=P.device),
                                       temperature=cfg.temperature))
    losses = {"exist": F.binary_cross_entropy_with_logits(exist, ex_t)}
    if dec.anchor:
        piv = out["pivot"]
        y = torch.zeros_like(piv)
        for b, f in enumerate(feats):
            for t, g in enumerate(f["gold"]):
                idx = g[g >= 0].unique().to(piv.device)
                if idx.numel():
                    y[b, t if piv.shape[1] > 1 else 0, idx] = 1.0
        mm = (piv > -1e3).float()
        losses["pivot"] = (F.binary_cross_entropy_with_logits(piv, y, reduction="none") * mm).sum() / mm.sum().clamp(min=1)
    if sel:
        bi, ti, ki = (torch.tensor(x, device=logp.device) for x in zip(*sel))
        target, rm = torch.stack(tgt), dec.role_mask[ti]
        losses["slot"] = slot_nll(logp[bi, ti, ki], target, rm)
        if variant.role_contrastive and cfg.rc_weight > 0:
            zz = z[bi, ti, ki][rm]                                                 # [n_slots, h]
            lab = (ti.unsqueeze(1) * R + torch.arange(R, device=ti.device))[rm]
            if zz.shape[0] > 512:
                keep = torch.randperm(zz.shape[0], device=zz.device)[:512]
                zz, lab = zz[keep], lab[keep]
            losses["role_contrastive"] = cfg.rc_weight * supcon(zz, lab, temperature=cfg.temperature)
    if pc_terms and cfg.pc_weight > 0:
        losses["probe_consistency"] = cfg.pc_weight * torch.stack(pc_terms).mean()
    return losses


def train_decoder(train_feats: Sequence[dict], schema: EventSchema, variant: Variant, cfg: EventConfig, *,
                  seed: int, dev_feats: Sequence[dict] | None = None, dev_docs: Sequence[Document] | None = None,
                  d_in: int, num_fields: int, progress: bool = False) -> tuple[RecordDecoder, dict]:
    """Stage 2 for one variant. The learning rate decays on a cosine to 0 over all steps. With
    ``dev_feats``/``dev_docs``: keeps the state with the best dev micro F1 (checked every
    ``cfg.eval_every`` epochs and at the end), then, if ``cfg.tune_threshold``, sets the decoder's
    record-existence threshold (``dec.exist_threshold``, used by :func:`decode`) to the value of
    :data:`THRESHOLDS` with the best dev micro F1 (a decoder that is precise but misses records,
    as measured on synthetic documents, gains recall at a lower threshold)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dec = RecordDecoder(d_in=d_in, d_extra=schema.num_types, hidden=cfg.hidden, num_types=schema.num_types,
                        roles_per_type=[len(r) for r in schema.roles], num_fields=num_fields,
                        num_probes=cfg.num_probes, probe_mode=variant.probe_mode, layers=cfg.dec_layers,
                        heads=cfg.heads, dropout=cfg.dropout, anchor=cfg.anchor_probes).to(cfg.device)
    opt = torch.optim.AdamW(dec.parameters(), lr=cfg.dec_lr)
    total = max(1, cfg.dec_epochs * len(_batches(len(train_feats), cfg.dec_batch, None)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, total) / total)))
    from tqdm.auto import tqdm
    best, best_state, history = -1.0, None, []
    for epoch in tqdm(range(1, cfg.dec_epochs + 1), desc=f"{variant.name} seed {seed}", disable=not progress, leave=False):
        dec.train()
        tot: dict[str, float] = {}
        for idx in _batches(len(train_feats), cfg.dec_batch, rng):
            part = [train_feats[i] for i in idx]
            losses = decoder_loss(dec(**collate(part, cfg.device)), part, dec, variant, cfg)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dec.parameters(), 1.0)
            opt.step()
            sched.step()
            for k, v in losses.items():
                tot[k] = tot.get(k, 0.0) + float(v.detach())
        row = {"epoch": epoch, **tot}
        if dev_feats is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.dec_epochs):
            f1 = evaluate_documents(decode(dec, dev_feats, schema, cfg), [d.records for d in dev_docs], schema)["micro_f1"]
            row["dev_f1"] = f1
            if f1 > best:
                best, best_state = f1, copy.deepcopy(dec.state_dict())
        history.append(row)
    if best_state is not None:
        dec.load_state_dict(best_state)
    dec.exist_threshold = cfg.exist_threshold
    if dev_feats is not None and cfg.tune_threshold:
        gold = [d.records for d in dev_docs]
        scores = {}
        for thr in THRESHOLDS:
            dec.exist_threshold = thr
            scores[thr] = evaluate_documents(decode(dec, dev_feats, schema, cfg), gold, schema)["micro_f1"]
        dec.exist_threshold = max(scores, key=lambda t: (scores[t], t == cfg.exist_threshold))
        best = scores[dec.exist_threshold]
    return dec.eval(), {"history": history, "best_dev_f1": best, "exist_threshold": dec.exist_threshold}


@torch.no_grad()
def decode(dec: RecordDecoder, feats: Sequence[dict], schema: EventSchema, cfg: EventConfig, *,
           batch: int = 32) -> list[list[tuple[str, tuple]]]:
    """Records ``[(event_type, args), ...]`` per document: a type is decoded when the detector
    says so (``cfg.type_gate``); each probe with existence probability above the threshold gives
    one record (at least the best probe of a detected type); empty and duplicate records dropped."""
    dec.eval()
    thr = getattr(dec, "exist_threshold", cfg.exist_threshold)
    preds = []
    for i in range(0, len(feats), batch):
        part = feats[i:i + batch]
        out = dec(**collate(part, cfg.device))
        pex = torch.sigmoid(out["exist"]).cpu()
        arg = out["logp"].argmax(-1).cpu()
        for b, f in enumerate(part):
            recs = []
            for t, etype in enumerate(schema.event_types):
                gated = bool(f["type_prob"][t] >= 0.5) if cfg.type_gate else None
                if gated is False:
                    continue
                ks = [k for k in range(dec.K) if pex[b, t, k] >= thr]
                if not ks and gated:
                    ks = [int(pex[b, t].argmax())]
                for k in ks:
                    args = tuple(f["strings"][j] if j < len(f["strings"]) else None
                                 for j in arg[b, t, k, :len(schema.roles[t])].tolist())
                    if any(a is not None for a in args) and (etype, args) not in recs:
                        recs.append((etype, args))
            preds.append(recs)
    return preds


def config_dict(cfg: EventConfig) -> dict:
    return asdict(cfg)
