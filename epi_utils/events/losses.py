"""Losses of the probe decoder.

``supcon`` is the supervised contrastive loss (Khosla et al., NeurIPS 2020):
``L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / tau) / sum_{a != i} exp(s_ia / tau) )``
over L2-normalised vectors, ``P(i)`` the other items with i's label; anchors without a positive
are skipped. The two losses of the event-probe paper are built on it:

* **role contrastive loss**: items are the role-slot vectors ``z[k, r]`` of probes matched to a gold
  record, labels are the (event type, role) ids: the same role across records is pulled together,
  different roles pushed apart.
* **probe consistency loss**: items are the probe states of one event type in one document whose
  type has at least two gold records, labels are each probe's best-fitting gold record: probes that
  match the same record are pulled together, probes of different records pushed apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon(x: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss of ``x [n, d]`` with integer ``labels [n]`` (0 if no positives)."""
    if x.shape[0] < 2:
        return x.sum() * 0.0
    z = F.normalize(x, dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    has = pos.any(1)
    if not has.any():
        return x.sum() * 0.0
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    per_anchor = -(logp * pos).sum(1)[has] / pos.sum(1)[has]
    return per_anchor.mean()


def slot_nll(logp: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of slot targets.

    ``logp [n, R, M+1]`` log-probabilities over candidates + null; ``target [n, R]`` candidate
    indices (``M`` = null); ``mask [n, R]`` true for the type's real role slots.
    """
    if target.numel() == 0 or not mask.any():
        return logp.sum() * 0.0
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum() / mask.sum()
