"""Prototypical network and Proto-AWATT for multi-label few-shot ACD.

Both return, for an episode with N classes, K shots and M queries, ``logits = -d`` of shape
``(M, N)`` where ``d`` is the squared Euclidean distance between a query and a prototype
(Snell et al. 2017), and ``probs = softmax(logits)`` over the N classes (Hu et al. 2021 use a
softmax over negative distances and then a threshold for multi-label prediction).

:class:`ProtoNet` (baseline): sentence vector = masked max-pool of the token states; prototype =
mean of the K support vectors; one query vector for all prototypes.

:class:`ProtoAWATT` (Hu et al. 2021, "Proto-AW(eighting)ATT(ention)"), as designed here from the
paper's abstract and method description:

* support-set attention: for class i, a guide ``c_i`` = mean over its K support sentences of
  their masked-mean token states; token weights ``alpha_{k,t} = softmax_t((W_c c_i + b_c)^T
  tanh(W_h h_{k,t} + b_h) / sqrt(A))`` over the real (unpadded) tokens of sentence k; ``s_k = sum_t alpha_{k,t} h_{k,t}``;
  prototype ``p_i = mean_k s_k``. Words about other aspects get low weight because they disagree
  with what the K sentences share.
* query-set attention: for every prototype ``p_i`` a query gets its own representation
  ``r_{q,i} = sum_t beta_{q,i,t} h_{q,t}`` with ``beta = softmax_t((W_p p_i + b_p)^T tanh(W_q h_{q,t} + b_q) / sqrt(A))``;
  distance ``d_{q,i} = ||r_{q,i} - p_i||^2``.
Choices left open and made here: multiplicative attention between a guide vector and tanh token
keys with ``attn_dim = A`` units (additive attention over every (query, prototype, token) triple
was 2x slower on CPU); the guide
uses mean pooling; squared distance; a learnable inverse temperature on the distances (initial
value ``1/sqrt(H)``) so probabilities are not saturated before training.
Attention ablation (issue 30; not part of the default design): ``ProtoAWATT(...,
attend_support=False)`` replaces the support-set attention by uniform weights over each
sentence's real tokens (masked-mean pooling; the prototype is the mean over the K sentences);
``attend_query=False`` gives every query one masked-mean representation for all prototypes; both
off is a prototypical network with masked-mean pooling and the same learnable temperature. The
unused projection layers stay (same parameters, same initialisation of the rest) but receive no
gradient. :func:`build_model` names them ``proto_awatt_no_support``, ``proto_awatt_no_query`` and
``proto_awatt_no_attention`` (:data:`ABLATIONS`).
Training loss (:func:`multilabel_proto_loss`): cross-entropy between ``probs`` and the
normalised multi-hot label ``y / sum(y)`` (equal to the usual prototypical loss for single labels).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over ``dim`` where ``mask`` is True; masked entries get weight 0.

    Rows whose mask is all False return all zeros (never NaN).
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(w, nan=0.0)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h (..., L, H)`` over the unmasked positions of ``mask (..., L)`` -> ``(..., H)``."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(-2) / m.sum(-2).clamp_min(1.0)


def masked_max(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of ``h (..., L, H)`` over the unmasked positions -> ``(..., H)``."""
    return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(-2).clamp_min(-1e4)


def sq_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a - b||^2`` summed over the last dim (broadcasting)."""
    return ((a - b) ** 2).sum(-1)


class _Base(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(encoder.hidden)))

    def forward(self, support_ids, support_mask, query_ids, query_mask, *, n_way: int, k_shot: int):
        """support ids/mask ``(N*K, L_s)`` in class-major order, query ids/mask ``(M, L_q)``; returns
        ``{"logits", "probs", "dist"}`` ``(M, N)`` and ``"prototypes"`` ``(N, H)``."""
        hs = self.encoder(support_ids, support_mask)
        hq = self.encoder(query_ids, query_mask)
        return self.head(hs, support_mask, hq, query_mask, n_way=n_way, k_shot=k_shot)

    def _out(self, dist: torch.Tensor, **extra) -> dict[str, torch.Tensor]:
        logits = -dist * self.log_scale.exp()
        return {"logits": logits, "probs": torch.softmax(logits, dim=-1), "dist": dist, **extra}


class ProtoNet(_Base):
    """Prototypical network with max-pooled sentence vectors (baseline)."""

    def head(self, hs, support_mask, hq, query_mask, *, n_way: int, k_shot: int):
        """From token states: support ``(N*K, L_s, H)`` class-major, query ``(M, L_q, H)``."""
        protos = masked_max(hs, support_mask).view(n_way, k_shot, -1).mean(1)   # (N, H)
        hq = masked_max(hq, query_mask)                                          # (M, H)
        return self._out(sq_euclidean(hq[:, None, :], protos[None, :, :]), prototypes=protos)


class ProtoAWATT(_Base):
    """Prototypical network with support-set and query-set attention (Hu et al. 2021);
    ``attend_support`` / ``attend_query`` False replace either attention by uniform weights over
    the real tokens (the ablation of the module docstring)."""

    def __init__(self, encoder: nn.Module, *, attn_dim: int = 64, attend_support: bool = True,
                 attend_query: bool = True):
        super().__init__(encoder)
        h = encoder.hidden
        self.s_tok, self.s_guide = nn.Linear(h, attn_dim), nn.Linear(h, attn_dim)
        self.q_tok, self.q_proto = nn.Linear(h, attn_dim), nn.Linear(h, attn_dim)
        self.scale = attn_dim ** -0.5
        self.attend_support, self.attend_query = bool(attend_support), bool(attend_query)

    def support_attention(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h (N, K, L, H)``, ``mask (N, K, L)`` -> ``(prototypes (N, H), weights (N, K, L))``.

        Weights sum to 1 over each sentence's real tokens and are 0 on padding (uniform there
        without ``attend_support``).
        """
        if not self.attend_support:
            alpha = masked_softmax(torch.zeros(mask.shape, dtype=h.dtype, device=h.device), mask, dim=-1)
            return torch.einsum("nkl,nklh->nkh", alpha, h).mean(1), alpha
        guide = masked_mean(h, mask).mean(1)                                     # (N, H)
        keys = torch.tanh(self.s_tok(h))                                          # (N, K, L, A)
        e = torch.einsum("nkla,na->nkl", keys, self.s_guide(guide)) * self.scale
        alpha = masked_softmax(e, mask, dim=-1)                                  # (N, K, L)
        sent = torch.einsum("nkl,nklh->nkh", alpha, h)                           # (N, K, H)
        return sent.mean(1), alpha

    def query_attention(self, h: torch.Tensor, mask: torch.Tensor, protos: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``h (M, L, H)``, ``mask (M, L)``, ``protos (N, H)`` -> ``(reps (M, N, H), weights (M, N, L))``
        (without ``attend_query`` uniform weights: one masked-mean representation for every prototype)."""
        if not self.attend_query:
            shape = (h.shape[0], protos.shape[0], h.shape[1])
            beta = masked_softmax(torch.zeros(shape, dtype=h.dtype, device=h.device),
                                  mask[:, None, :].expand(shape), dim=-1)
            return torch.einsum("mnl,mlh->mnh", beta, h), beta
        keys = torch.tanh(self.q_tok(h))                                          # (M, L, A)
        e = torch.einsum("mla,na->mnl", keys, self.q_proto(protos)) * self.scale
        beta = masked_softmax(e, mask[:, None, :].expand_as(e), dim=-1)          # (M, N, L)
        return torch.einsum("mnl,mlh->mnh", beta, h), beta

    def head(self, hs, support_mask, hq, query_mask, *, n_way: int, k_shot: int):
        """As :meth:`ProtoNet.head`; also returns ``support_attn (N, K, L_s)`` and ``query_attn (M, N, L_q)``."""
        width = hs.shape[1]
        smask = support_mask.view(n_way, k_shot, width)
        protos, alpha = self.support_attention(hs.view(n_way, k_shot, width, -1), smask)
        reps, beta = self.query_attention(hq, query_mask, protos)
        return self._out(sq_euclidean(reps, protos[None, :, :]), prototypes=protos,
                         support_attn=alpha, query_attn=beta)


def multilabel_proto_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``softmax(logits)`` (M, N) against ``labels / labels.sum(1)`` (M, N multi-hot)."""
    target = labels / labels.sum(1, keepdim=True).clamp_min(1.0)
    return -(target * torch.log_softmax(logits, dim=-1)).sum(1).mean()


#: the attention ablation: model name -> (attend_support, attend_query) of :class:`ProtoAWATT`
ABLATIONS: dict[str, tuple[bool, bool]] = {"proto_awatt_no_support": (False, True),
                                           "proto_awatt_no_query": (True, False),
                                           "proto_awatt_no_attention": (False, False)}
MODELS = ("protonet", "proto_awatt", *ABLATIONS)


def build_model(method: str, encoder: nn.Module, *, attn_dim: int = 64) -> nn.Module:
    """``method`` in :data:`MODELS`: ``"protonet"``, ``"proto_awatt"`` or one of :data:`ABLATIONS`."""
    if method == "protonet":
        return ProtoNet(encoder)
    if method == "proto_awatt":
        return ProtoAWATT(encoder, attn_dim=attn_dim)
    if method in ABLATIONS:
        support, query = ABLATIONS[method]
        return ProtoAWATT(encoder, attn_dim=attn_dim, attend_support=support, attend_query=query)
    raise ValueError(f"method must be one of {MODELS}, got {method!r}")
