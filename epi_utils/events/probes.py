"""Stage 2: the record decoder, with event-specific probes or one shared (no-probe) decoder.

Design (from the event-probe abstract, Findings of NAACL 2025, and the field's practice:
Doc2EDAG, DE-PPN's parallel decoder, ProCNet's proxy nodes):

* Inputs: sentence vectors ``[B, S, d_in + T]`` and candidate-mention vectors ``[B, M, 2 d_in + T]`` with an
  entity-field id ``[B, M]``. Both are projected to ``h`` and contextualised jointly by one
  Transformer layer (Doc2EDAG's document-level encoder).
* **Argument library** of event type t: every candidate with a role-aware representation
  ``lib_t[m] = ment[m] + sum_r softmax_r(ment[m] . e_{t,r}) e_{t,r}`` (``e_{t,r}`` role embeddings).
* **Event-specific probes**: ``K`` learnable queries per event type; a Transformer decoder lets
  each type's probes attend to one another and over ``[sentences; lib_t]``, giving probe states
  ``P [B, T, K, h]``. Each probe decodes one record: for role r a slot vector
  ``z = tanh(W [P_k ; e_{t,r}])`` scores every candidate (``z . lib_t[m] / sqrt(h)``) and a learned
  null vector, and a per-type linear head gives the probe's "emits a record" logit.
* **Anchored probes** (``anchor=True``, default): a per-type pivot scorer ranks the library
  (trained to spot arguments of that type's gold records, like PTPCG's pseudo-triggers) and probe
  k starts from its learnable query plus the k-th ranked candidate's library vector. Purely
  learned queries (``anchor=False``) converge slowly (as DETR's do) on a few hundred documents.
* **Shared decoder** (``probe_mode="shared"``, the no-probe baseline): one set of ``K`` queries for
  all types attends over ``[sentences; mentions]`` without type-specific libraries; its states are
  reused by every type's slot and existence heads.
"""
from __future__ import annotations

import math

import torch
from torch import nn

MODES = ("event_specific", "shared")


class RecordDecoder(nn.Module):
    """Shapes: ``B`` docs, ``T`` types, ``K`` probes, ``R`` max roles, ``M`` candidates, ``S`` sentences."""

    def __init__(self, *, d_in: int, d_extra: int = 0, hidden: int, num_types: int, roles_per_type: list[int],
                 num_fields: int, num_probes: int, probe_mode: str = "event_specific",
                 layers: int = 2, heads: int = 4, dropout: float = 0.1, anchor: bool = True):
        super().__init__()
        if probe_mode not in MODES:
            raise ValueError(f"probe_mode must be one of {MODES}, got {probe_mode!r}")
        if num_probes < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        self.mode, self.T, self.K, self.h, self.anchor = probe_mode, num_types, num_probes, hidden, anchor
        self.R = max(roles_per_type)
        role_mask = torch.zeros(num_types, self.R, dtype=torch.bool)
        for t, n in enumerate(roles_per_type):
            role_mask[t, :n] = True
        self.register_buffer("role_mask", role_mask)
        self.sent_in = nn.Linear(d_in + d_extra, hidden)         # [sentence ; per-type scores]
        self.ment_in = nn.Linear(2 * d_in + d_extra, hidden)     # [span ; sentence context ; per-type scores]
        self.field = nn.Embedding(num_fields + 1, hidden)
        self.kind = nn.Embedding(2, hidden)  # 0 sentence, 1 mention
        self.doc = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.role = nn.Parameter(torch.randn(num_types, self.R, hidden) / math.sqrt(hidden))
        n_q = num_types * num_probes if probe_mode == "event_specific" else num_probes
        self.queries = nn.Parameter(torch.randn(n_q, hidden) / math.sqrt(hidden))
        layer = nn.TransformerDecoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
        self.dec = nn.TransformerDecoder(layer, layers)
        self.slot_p = nn.Linear(hidden, hidden)           # W [P_k ; e_tr] = W_p P_k + W_e e_tr (factorised)
        self.slot_e = nn.Linear(hidden, hidden, bias=False)
        self.null = nn.Parameter(torch.zeros(hidden))
        self.exist_w = nn.Parameter(torch.zeros(num_types, hidden))
        self.exist_b = nn.Parameter(torch.zeros(num_types))
        self.pivot_w = nn.Parameter(torch.randn(num_types if probe_mode == "event_specific" else 1, hidden) / math.sqrt(hidden))

    def anchors(self, lib: torch.Tensor, ment_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pivot logits ``[B, T', M]`` and anchor vectors ``[B, T', K, h]`` (``T'`` = T, or 1 if shared)."""
        piv = torch.einsum("btmh,th->btm", lib, self.pivot_w).masked_fill(~ment_mask[:, None, :], -1e4)
        B, Tp, M = piv.shape
        anc = lib.new_zeros(B, Tp, self.K, self.h)
        if self.anchor and M > 0:
            k = min(self.K, M)
            top = piv.detach().topk(k, dim=-1).indices                           # [B, T', k]
            vec = lib.gather(2, top.unsqueeze(-1).expand(-1, -1, -1, self.h))
            ok = ment_mask.gather(1, top.flatten(1)).view(B, Tp, k, 1)
            anc[:, :, :k] = vec * ok
        return piv, anc

    def library(self, ment: torch.Tensor) -> torch.Tensor:
        """Role-aware argument libraries ``[B, T, M, h]`` from mention vectors ``[B, M, h]``."""
        att = torch.einsum("bmh,trh->btmr", ment, self.role) / math.sqrt(self.h)
        att = att.masked_fill(~self.role_mask[None, :, None, :], -1e4).softmax(-1)
        return ment.unsqueeze(1) + torch.einsum("btmr,trh->btmh", att, self.role)

    def forward(self, sent, sent_mask, ment, ment_mask, ment_field):
        """Returns a dict with ``logp [B, T, K, R, M+1]`` (index M = null), ``exist [B, T, K]``
        logits, probe states ``P [B, T, K, h]``, slot vectors ``z [B, T, K, R, h]``, pivot logits
        ``pivot [B, T', M]``."""
        B, S, _ = sent.shape
        M = ment.shape[1]
        s = self.sent_in(sent) + self.kind.weight[0]
        m = self.ment_in(ment) + self.field(ment_field) + self.kind.weight[1]
        x = torch.cat([s, m], 1)
        mask = torch.cat([sent_mask, ment_mask], 1)
        x = self.doc(x, src_key_padding_mask=~mask)
        s, m = x[:, :S], x[:, S:]
        if self.mode == "event_specific":
            lib = self.library(m)                                               # [B, T, M, h]
            piv, anc = self.anchors(lib, ment_mask)
            mem = torch.cat([s.unsqueeze(1).expand(-1, self.T, -1, -1), lib], 2).reshape(B * self.T, S + M, self.h)
            mem_mask = mask.unsqueeze(1).expand(-1, self.T, -1).reshape(B * self.T, S + M)
            q = (self.queries.view(self.T, self.K, self.h).unsqueeze(0) + anc).reshape(B * self.T, self.K, self.h)
            P = self.dec(q, mem, memory_key_padding_mask=~mem_mask).view(B, self.T, self.K, self.h)
        else:
            lib = m.unsqueeze(1).expand(-1, self.T, -1, -1)
            piv, anc = self.anchors(m.unsqueeze(1), ment_mask)
            q = self.queries.unsqueeze(0) + anc[:, 0]
            P = self.dec(q, x, memory_key_padding_mask=~mask).unsqueeze(1).expand(-1, self.T, -1, -1)
        z = torch.tanh(self.slot_p(P).unsqueeze(3) + self.slot_e(self.role)[None, :, None])  # [B, T, K, R, h]
        scores = torch.einsum("btkrh,btmh->btkrm", z, lib) / math.sqrt(self.h)
        scores = scores.masked_fill(~ment_mask[:, None, None, None, :], -1e4)
        null = (z * self.null).sum(-1, keepdim=True) / math.sqrt(self.h)
        logp = torch.cat([scores, null], -1).log_softmax(-1)
        exist = torch.einsum("btkh,th->btk", P, self.exist_w) + self.exist_b[None, :, None]
        return {"logp": logp, "exist": exist, "P": P, "z": z, "pivot": piv}
