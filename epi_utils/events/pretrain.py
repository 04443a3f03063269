"""Masked-character pretraining of the character Transformer on unlabeled text.

Masked language modelling (Devlin et al., NAACL 2019, "BERT", §3.1) at the character level: 15% of
the characters of each window are chosen; of those 80% are replaced by the mask id, 10% by a random
character, 10% kept; the encoder predicts the original characters through an output layer tied to
the character embeddings. The text is every sentence of every document at hand, including dev and
test documents: their text is what a user has before any label, and no label is read here. This is
the offline stand-in for a Chinese pretrained encoder (the gpu profile loads one instead).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from epi_utils.events.data import Document
from epi_utils.events.encoder import CharTransformer, CharVocab


def windows_of(docs: Sequence[Document], width: int) -> list[str]:
    """Each document's sentences concatenated and cut into windows of ``width`` characters (as
    :meth:`~.encoder.DocumentEncoder.encode` cuts them)."""
    out = []
    for d in docs:
        text = "".join(d.sentences)
        out.extend(text[i:i + width] for i in range(0, len(text), width))
    return [w for w in out if w]


def mask_characters(ids: torch.Tensor, mask: torch.Tensor, *, vocab_size: int, rate: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of ``ids [N, L]`` (``mask`` true on characters): returns ``(inputs, targets)``
    with targets -100 where no prediction is asked. Random replacements draw from ids >= 3 (no
    padding, unknown or mask)."""
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & mask
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    u = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (u < 0.8)] = CharVocab.MASK
    rand = chosen & (u >= 0.8) & (u < 0.9)
    inputs[rand] = torch.randint(3, max(4, vocab_size), ids.shape, generator=generator)[rand]
    return inputs, targets


def pretrain_characters(model: CharTransformer, docs: Sequence[Document], *, epochs: int, lr: float,
                        batch: int = 64, rate: float = 0.15, seed: int = 0) -> list[float]:
    """Train ``model`` (in place) by masked-character prediction on ``docs``' text for ``epochs``
    passes; returns the mean loss of each epoch (cross-entropy in nats per masked character).

    Windows of ``model.max_len`` characters, ``batch`` windows per step, AdamW with a linear warm-up
    over the first 10% of steps and cosine decay. The output layer is the transposed embedding
    matrix plus a bias (tied, as in BERT), so pretraining adds no parameters the fine-tuned encoder
    does not use.
    """
    if epochs <= 0:
        return []
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    wins = windows_of(docs, model.max_len)
    dev = model.emb.weight.device
    bias = torch.zeros(len(model.vocab), device=dev, requires_grad=True)
    opt = torch.optim.AdamW(list(model.parameters()) + [bias], lr=lr, weight_decay=0.01)
    n_batches = -(-len(wins) // batch)
    total = max(1, epochs * n_batches)
    warm = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(i, total) / total)))
    model.train()
    losses = []
    for _ in range(epochs):
        order, tot, n = rng.permutation(len(wins)), 0.0, 0
        for i in range(0, len(wins), batch):
            ids, mask = model.vocab.encode([wins[j] for j in order[i:i + batch]], max_len=model.max_len)
            inputs, targets = mask_characters(ids, mask, vocab_size=len(model.vocab), rate=rate, generator=g)
            h = model.forward_ids(inputs.to(dev), mask.to(dev))
            sel = targets != -100
            if not sel.any():
                continue
            logits = h[sel.to(dev)] @ model.emb.weight.T + bias
            loss = F.cross_entropy(logits, targets[sel].to(dev))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot, n = tot + float(loss.detach()), n + 1
        losses.append(tot / max(n, 1))
    return losses
