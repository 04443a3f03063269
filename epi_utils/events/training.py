"""Stage 2: record decoders on frozen stage-1 features, their dev-based selection, and decoding.

With the stage-1 encoder frozen (:mod:`.frontend`), a :class:`~.probes.RecordDecoder` learns to
decode records from candidate mentions. Freezing lets every decoder variant of an encoder share
exactly the same features and candidates, so variants differ only in the decoder and its losses.

Selection on the dev split (:func:`train_decoder`): the checkpoint (every ``eval_every`` epochs;
training stops after ``dec_patience`` checks without a better one, at most ``dec_epochs`` epochs:
this chooses the number of epochs; on a small data set an epoch is several passes,
:func:`~.schedule.epoch_scale`), the record-existence threshold and the type gate are
chosen by the key ``(dev micro F1 on the test-time candidates, dev micro F1 on the annotated dev
mentions, -dev loss)``: when the first ties (e.g. 0 at every check, which a weak front end gives
early in training), the decoder that decodes the annotated mentions best and then the one with the
lowest dev loss wins, instead of the first checkpoint and the default threshold.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from epi_utils.events.alignment import assign, best_record
from epi_utils.events.config import THRESHOLDS, EventConfig
from epi_utils.events.data import Document
from epi_utils.events.frontend import batches
from epi_utils.events.losses import slot_nll, supcon
from epi_utils.events.methods import Variant
from epi_utils.events.metric import evaluate_documents
from epi_utils.events.probes import RecordDecoder
from epi_utils.events.schedule import Plateau, epoch_scale
from epi_utils.events.schema import EventSchema


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


@torch.no_grad()
def dev_loss(dec: RecordDecoder, feats: Sequence[dict], variant: Variant, cfg: EventConfig, *, batch: int = 32) -> float:
    """Mean total decoder loss (:func:`decoder_loss`) over ``feats`` in eval mode (a selection tie-break)."""
    return decoder_outputs(dec, feats, cfg, batch=batch, variant=variant)[1]


def selection_key(f1: float, f1_annotated: float, loss: float) -> tuple[float, float, float]:
    """Order of dev checkpoints and decoding settings (higher is better): dev micro F1 on the
    test-time candidates, then dev micro F1 from the annotated dev mentions, then the lower dev loss."""
    return (f1, f1_annotated, -loss)


def train_decoder(train_feats: Sequence[dict], schema: EventSchema, variant: Variant, cfg: EventConfig, *,
                  seed: int, dev_feats: Sequence[dict] | None = None, dev_docs: Sequence[Document] | None = None,
                  dev_gold_feats: Sequence[dict] | None = None, d_in: int, num_fields: int,
                  max_steps: int | None = None) -> tuple[RecordDecoder, dict]:
    """Stage 2 for one variant at the constant learning rate ``cfg.dec_lr``.

    With ``dev_feats``/``dev_docs`` (and optionally ``dev_gold_feats``, the annotated dev mentions):
    every ``cfg.eval_every`` epochs and at the last allowed, the checkpoint is scored by
    :func:`selection_key` (dev F1, dev F1 from annotated mentions, dev loss) and the best kept;
    training stops after ``cfg.dec_patience`` checks without a better key
    (:class:`~.schedule.Plateau`) or at ``cfg.dec_epochs`` scheduled epochs. On a data set with fewer
    than ``cfg.dec_epoch_steps`` batches a scheduled epoch is several passes
    (:func:`~.schedule.epoch_scale`): the most passes and the check period scale with it. Without dev
    data it trains the most passes. Then the
    existence threshold (:data:`~.config.THRESHOLDS`, if ``cfg.tune_threshold``) and, with
    ``cfg.type_gate == "dev"``, the type gate (on/off) are chosen by the same key. The choices are set
    on the decoder (``dec.exist_threshold``, ``dec.type_gate``) and returned in ``info`` with the
    ``history`` of losses and dev scores. ``max_steps`` stops early (the GPU rehearsal).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dec = RecordDecoder(d_in=d_in, d_extra=schema.num_types, hidden=cfg.hidden, num_types=schema.num_types,
                        roles_per_type=[len(r) for r in schema.roles], num_fields=num_fields,
                        num_probes=cfg.num_probes, probe_mode=variant.probe_mode, layers=cfg.dec_layers,
                        heads=cfg.heads, dropout=cfg.dropout, anchor=cfg.anchor_probes).to(cfg.torch_device)
    dec.exist_threshold = cfg.exist_threshold
    dec.type_gate = cfg.type_gate != "off"
    opt = torch.optim.AdamW(dec.parameters(), lr=cfg.dec_lr)
    scale = epoch_scale(n_items=max(1, len(train_feats)), batch=cfg.dec_batch, epoch_steps=cfg.dec_epoch_steps)
    max_epochs, check_every = cfg.dec_epochs * scale, cfg.eval_every * scale
    sched = None
    if cfg.dec_lr_decay:   # cosine over the most epochs (the synthetic check's fixed schedule)
        total = max(1, max_epochs * len(batches(len(train_feats), cfg.dec_batch, None)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + np.cos(np.pi * min(i, total) / total)))
    plateau = Plateau(patience=cfg.dec_patience)
    gold = [d.records for d in dev_docs] if dev_docs is not None else None

    def score(outs, outs_gold) -> tuple[float, float]:
        """Dev micro F1 from the test-time and from the annotated candidates, decoded from the
        cached network outputs with the decoder's current threshold and gate."""
        f1 = evaluate_documents(decode(dec, dev_feats, schema, cfg, outputs=outs), gold, schema)["micro_f1"]
        fa = (evaluate_documents(decode(dec, dev_gold_feats, schema, cfg, outputs=outs_gold), gold, schema)["micro_f1"]
              if dev_gold_feats is not None else 0.0)
        return f1, fa

    def outputs(with_loss: bool = True) -> tuple[list, list | None, float]:
        """One eval-mode pass over the dev features (outputs and, ``with_loss``, the dev loss) and one
        over the annotated dev features: what every dev check and the threshold/gate search decode from."""
        outs, loss_dev = decoder_outputs(dec, dev_feats, cfg, variant=variant if with_loss else None)
        outs_gold = decoder_outputs(dec, dev_gold_feats, cfg)[0] if dev_gold_feats is not None else None
        return outs, outs_gold, loss_dev

    best, best_state, best_epoch, history, steps = None, None, 0, [], 0
    for epoch in range(1, max_epochs + 1):
        dec.train()
        tot: dict[str, float] = {}
        for idx in batches(len(train_feats), cfg.dec_batch, rng):
            part = [train_feats[i] for i in idx]
            losses = decoder_loss(dec(**collate(part, cfg.torch_device)), part, dec, variant, cfg)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dec.parameters(), 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            steps += 1
            for k, v in losses.items():
                tot[k] = tot.get(k, 0.0) + float(v.detach())
            if max_steps is not None and steps >= max_steps:
                break
        row = {"epoch": epoch, **tot}
        last = epoch == max_epochs or (max_steps is not None and steps >= max_steps)
        if dev_feats is not None and (epoch % check_every == 0 or last):
            outs, outs_gold, loss_dev = outputs()
            f1, fa = score(outs, outs_gold)
            row.update({"dev_f1": f1, "dev_f1_annotated": fa, "dev_loss": loss_dev})
            key = selection_key(f1, fa, loss_dev)
            if best is None or key > best:
                best, best_state, best_epoch = key, copy.deepcopy(dec.state_dict()), epoch
            last = plateau.update(key) or last
        history.append(row)
        if last:
            break
    if best_state is not None:
        dec.load_state_dict(best_state)
    info = {"history": history, "best_epoch": best_epoch, "last_epoch": history[-1]["epoch"] if history else 0,
            "max_epochs": max_epochs}
    if dev_feats is not None:
        loss_dev = -best[2]
        gates = [True, False] if cfg.type_gate == "dev" else [cfg.type_gate == "on"]
        thresholds = THRESHOLDS if cfg.tune_threshold else (cfg.exist_threshold,)
        outs, outs_gold, _ = outputs(with_loss=False)   # the kept checkpoint's outputs, decoded at every setting
        choices = {}
        for gate in gates:
            for thr in thresholds:
                dec.type_gate, dec.exist_threshold = gate, thr
                f1, fa = score(outs, outs_gold)
                # ties: prefer the configured threshold, then the gate on
                choices[(gate, thr)] = (selection_key(f1, fa, loss_dev), thr == cfg.exist_threshold, gate)
        (gate, thr), (key, _, _) = max(choices.items(), key=lambda kv: kv[1])
        dec.type_gate, dec.exist_threshold = gate, thr
        info.update({"best_dev_f1": key[0], "best_dev_f1_annotated": key[1], "dev_loss": loss_dev})
    info.update({"exist_threshold": dec.exist_threshold, "type_gate": dec.type_gate})
    return dec.eval(), info


@torch.no_grad()
def decoder_outputs(dec: RecordDecoder, feats: Sequence[dict], cfg: EventConfig, *, batch: int = 32,
                    variant: Variant | None = None) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """One eval-mode pass of ``dec`` over ``feats`` in batches of ``batch``: per batch the existence
    probabilities ``[B, T, K]`` and the argmax candidate of every slot ``[B, T, K, R]`` (what
    :func:`decode` turns into records at any threshold and gate), and with ``variant`` the mean
    decoder loss over ``feats`` (:func:`dev_loss`, from the same forward pass; else NaN)."""
    dec.eval()
    outs, tot, n = [], 0.0, 0
    for i in range(0, len(feats), batch):
        part = list(feats[i:i + batch])
        out = dec(**collate(part, cfg.torch_device))
        outs.append((torch.sigmoid(out["exist"]).cpu(), out["logp"].argmax(-1).cpu()))
        if variant is not None:
            tot += float(sum(decoder_loss(out, part, dec, variant, cfg).values())) * len(part)
            n += len(part)
    return outs, (tot / max(n, 1) if variant is not None else float("nan"))


@torch.no_grad()
def decode(dec: RecordDecoder, feats: Sequence[dict], schema: EventSchema, cfg: EventConfig, *,
           batch: int = 32, outputs: list | None = None) -> list[list[tuple[str, tuple]]]:
    """Records ``[(event_type, args), ...]`` per document: with the type gate on (``dec.type_gate``,
    set by :func:`train_decoder`), a type is decoded only when the stage-1 detector gives it
    probability >= 0.5, and then at least its best probe; each probe with existence probability at
    or above ``dec.exist_threshold`` gives one record; empty and duplicate records are dropped.
    ``outputs``: :func:`decoder_outputs` of ``feats`` with the same ``batch`` (decoding at several
    thresholds and gates without running the network again; the records are the same)."""
    thr = getattr(dec, "exist_threshold", cfg.exist_threshold)
    use_gate = getattr(dec, "type_gate", cfg.type_gate != "off")
    if outputs is None:
        outputs, _ = decoder_outputs(dec, feats, cfg, batch=batch)
    preds = []
    for n_batch, (pex, arg) in enumerate(outputs):
        part = feats[n_batch * batch:(n_batch + 1) * batch]
        for b, f in enumerate(part):
            recs = []
            for t, etype in enumerate(schema.event_types):
                gated = bool(f["type_prob"][t] >= 0.5) if use_gate else None
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
