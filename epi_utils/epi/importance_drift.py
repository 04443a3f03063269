"""Drift metrics between two importance snapshots (study 01).

All functions take dicts ``name -> tensor`` with matching names and shapes (bool masks or float
scores, as :func:`epi_utils.epi.importance.top_share_mask` and ``ImportanceTracker.scores`` return).

- :func:`jaccard`: ``|A & B| / |A | B|`` of two masks (1.0 when both are empty).
- :func:`spearman`: Spearman rank correlation of two score snapshots, computed on a uniform
  sample of ``sample_size`` element positions (the same positions in both) for large models;
  exact (all elements) when the model has at most ``sample_size`` elements. Ties get average ranks.
- :func:`turnover`: ``entering = |B \\ A| / |B|``, ``leaving = |A \\ B| / |A|`` and
  ``turnover = |A ^ B| / (|A| + |B|)`` (= 1 - Dice; 0 = identical, 1 = disjoint) from A (earlier)
  to B (later).
- :func:`layer_shares` / :func:`module_shares`: for each transformer block (``h.3.``,
  ``layers.3.``) or module kind (attention, mlp, embedding, norm, head), the share of its
  elements inside the mask (``density``) and its share of the mask (``of_mask``).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import torch

_LAYER_RE = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)\.")


def _check_same(a: Mapping, b: Mapping) -> None:
    if list(a) != list(b):
        raise ValueError(f"the two snapshots have different parameter names: {sorted(set(a) ^ set(b))[:5]}")
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"shape mismatch for {n!r}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}")


def _counts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int]:
    _check_same(a, b)
    inter = na = nb = 0
    for n in a:
        ma, mb = a[n].bool(), b[n].bool()
        inter += int(torch.count_nonzero(ma & mb))  # count_nonzero: vectorised, bool .sum() is not on CPU
        na += int(torch.count_nonzero(ma))
        nb += int(torch.count_nonzero(mb))
    union = na + nb - inter
    return inter, union, na, nb


def jaccard(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Jaccard overlap of two masks; 1.0 when both are empty."""
    inter, union, _, _ = _counts(a, b)
    return 1.0 if union == 0 else inter / union


def turnover(prev: Mapping[str, torch.Tensor], cur: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``{"entering", "leaving", "turnover"}`` shares from mask ``prev`` to mask ``cur``."""
    inter, _, na, nb = _counts(prev, cur)
    entering = 0.0 if nb == 0 else (nb - inter) / nb
    leaving = 0.0 if na == 0 else (na - inter) / na
    sym = (na - inter) + (nb - inter)
    return {"entering": entering, "leaving": leaving, "turnover": 0.0 if na + nb == 0 else sym / (na + nb)}


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def spearman(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], *, sample_size: int = 200_000,
             generator: torch.Generator | None = None) -> float:
    """Spearman rank correlation of two score snapshots (on a sample above ``sample_size``).

    A sample needs an explicit ``generator``; NaN when either side is constant.
    """
    _check_same(a, b)
    fa = torch.cat([a[n].detach().float().reshape(-1).cpu() for n in a])
    fb = torch.cat([b[n].detach().float().reshape(-1).cpu() for n in b])
    if fa.numel() > sample_size:
        if generator is None:
            raise ValueError("spearman on more than sample_size elements needs a generator (generator=...)")
        idx = torch.randint(0, fa.numel(), (sample_size,), generator=generator)
        fa, fb = fa[idx], fb[idx]
    ra, rb = _ranks(fa.numpy()), _ranks(fb.numpy())
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def layer_of(name: str) -> str:
    """Block index of a parameter name (``"3"`` for ``transformer.h.3.attn.c_attn.weight``),
    ``"embed"`` for embeddings before the blocks and ``"other"`` for the rest (final norm, head)."""
    m = _LAYER_RE.search(name)
    if m:
        return m.group(1)
    low = name.lower()
    if "wte" in low or "wpe" in low or "embed" in low:
        return "embed"
    return "other"


def module_of(name: str) -> str:
    """Module kind of a parameter name: attention, mlp, embedding, norm, head or other."""
    low = name.lower()
    if "wte" in low or "wpe" in low or "embed" in low:
        return "embedding"
    if "ln" in low or "norm" in low:
        return "norm"
    if "attn" in low or "attention" in low or any(k in low for k in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return "attention"
    if "mlp" in low or any(k in low for k in ("c_fc", "up_proj", "down_proj", "gate_proj", "fc1", "fc2")):
        return "mlp"
    if "lm_head" in low or "head" in low:
        return "head"
    return "other"


def _group_shares(mask: Mapping[str, torch.Tensor], key) -> dict[str, dict[str, float]]:
    tot_in = sum(int(torch.count_nonzero(m)) for m in mask.values())
    groups: dict[str, list[int]] = {}
    for n, m in mask.items():
        g = groups.setdefault(key(n), [0, 0])
        g[0] += int(torch.count_nonzero(m))
        g[1] += m.numel()
    return {g: {"density": c / max(t, 1), "of_mask": c / max(tot_in, 1)} for g, (c, t) in groups.items()}


def layer_shares(mask: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per block (:func:`layer_of`): ``density`` (share of the block in the mask) and
    ``of_mask`` (share of the mask in the block)."""
    return _group_shares(mask, layer_of)


def module_shares(mask: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per module kind (:func:`module_of`): ``density`` and ``of_mask`` as :func:`layer_shares`."""
    return _group_shares(mask, module_of)
