"""Drift metrics between two importance snapshots (study 01).

All functions take dicts ``name -> tensor`` with matching names and shapes (bool masks or float
scores, as :func:`epi_utils.importance.estimators.top_share_mask` and ``ImportanceTracker.scores`` return).

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

Rankings (sorted flat indices, :func:`epi_utils.importance.checkpoint.top_ranking`), the
study-01 checkpoint protocol:

- :func:`topk_jaccard`: Jaccard of the top-``k`` prefixes of two rankings, overall and per group
  of elements (layer type).
- :func:`rbo`: rank-biased overlap of two rankings truncated at depth ``k`` (Webber, Moffat & Zobel
  2010, "A similarity measure for indefinite rankings", Eq. 7), normalised so that identical
  prefixes give 1 and disjoint ones 0, with persistence ``phi = 0.1 ** (1 / k)`` (the first ``k``
  ranks carry 90% of the untruncated weight).
- :func:`drift_index`: ``D_ts = 1 - C_ts / sqrt(R_t * R_s)``, cross-time agreement relative to the
  estimator's own reliability at the two checkpoints (0: no drift beyond noise; 1: unrelated sets).
"""
from __future__ import annotations

import functools
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
    return turnover_from_counts(na, nb, inter)


def turnover_from_counts(na: int, nb: int, inter: int) -> dict[str, float]:
    """:func:`turnover` from the counts: ``na`` elements in the previous mask, ``nb`` in the new
    one, ``inter`` in both (the one formula; the fused refresh counts them on packed sets)."""
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


# --------------------------------------------------------------------------------------------- rankings
def _prefix(ranking: torch.Tensor, k: int) -> torch.Tensor:
    if k < 1 or k > ranking.numel():
        raise ValueError(f"k must be in [1, {ranking.numel()}] (the stored ranking's length), got {k}")
    return ranking[:k].long()


def inverse_ranking(ranking: torch.Tensor, *, n: int) -> torch.Tensor:
    """Position of every element ``0..n-1`` in ``ranking`` (``len(ranking)`` for elements not in
    it): shape ``(n,)``, int32 below 2**31 elements. Pass as ``inv_b`` to reuse it across shares."""
    dtype = torch.int32 if n < 2 ** 31 else torch.int64
    inv = torch.full((n,), ranking.numel(), dtype=dtype, device=ranking.device)
    inv[ranking.long()] = torch.arange(ranking.numel(), dtype=dtype, device=ranking.device)
    return inv


def topk_jaccard(rank_a: torch.Tensor, rank_b: torch.Tensor, *, k: int, n: int,
                 groups: tuple[list[str], torch.Tensor] | None = None,
                 inv_b: torch.Tensor | None = None) -> dict[str, float]:
    """Jaccard of the top-``k`` sets of two rankings over ``n`` elements: ``{"all": J}``, plus one
    entry per group when ``groups`` (from :func:`epi_utils.importance.checkpoint.group_ids`) is
    given: ``|A & B & G| / |(A | B) & G|`` (NaN when neither set has an element in ``G``).
    ``inv_b``: :func:`inverse_ranking` of ``rank_b`` (computed when not given)."""
    a, b = _prefix(rank_a, k), _prefix(rank_b, k)
    inv_b = inverse_ranking(rank_b, n=n) if inv_b is None else inv_b
    hit = inv_b[a] < k
    inter = int(torch.count_nonzero(hit))
    out = {"all": inter / (2 * k - inter)}
    if groups is not None:
        names, elem = groups
        elem = elem.to(a.device)
        ga = elem[a].long()
        ca = torch.bincount(ga, minlength=len(names))
        cb = torch.bincount(elem[b].long(), minlength=len(names))
        ci = torch.bincount(ga[hit], minlength=len(names))
        for i, g in enumerate(names):
            union = int(ca[i] + cb[i] - ci[i])
            out[g] = float("nan") if union == 0 else int(ci[i]) / union
    return out


def rbo(rank_a: torch.Tensor, rank_b: torch.Tensor, *, k: int, n: int, inv_b: torch.Tensor | None = None) -> float:
    """Rank-biased overlap at depth ``k`` (see the module docstring), in [0, 1].

    ``RBO@k = (1 - phi) / (1 - phi**k) * sum_{d=1..k} phi**(d-1) * |A_:d & B_:d| / d``.
    Example: ``[0, 1]`` vs ``[1, 0]`` at ``k = 2``: ``phi = 0.1**0.5``, overlaps 0 and 1, so
    ``RBO = phi / (1 + phi) = 0.2403``. ``inv_b`` as in :func:`topk_jaccard`.
    """
    a = _prefix(rank_a, k)
    _prefix(rank_b, k)
    inv_b = inverse_ranking(rank_b, n=n) if inv_b is None else inv_b
    depth = torch.maximum(torch.arange(k, device=a.device), inv_b[a].long())  # a[i] in both prefixes from depth+1 on
    hist = torch.bincount(depth[depth < k], minlength=k).double()
    overlap = hist.cumsum(0)  # overlap[d-1] = |A_:d & B_:d|
    return float((_rbo_weights(k, str(a.device)) * overlap).sum())


@functools.lru_cache(maxsize=8)
def _rbo_weights(k: int, device: str = "cpu") -> torch.Tensor:
    """``(1 - phi) / (1 - phi**k) * phi**(d-1) / d`` for ``d = 1..k``, ``phi = 0.1**(1/k)``."""
    d = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    log_phi = np.log(0.1) / k
    norm = (1 - np.exp(log_phi)) / (1 - np.exp(k * log_phi))
    return norm * torch.exp((d - 1) * log_phi) / d


def spearman_vectors(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two score vectors of the same shape (average ranks for ties;
    NaN when either is constant)."""
    x, y = a.detach().float().reshape(-1).cpu().numpy(), b.detach().float().reshape(-1).cpu().numpy()
    if x.shape != y.shape:
        raise ValueError(f"spearman_vectors: shapes differ, {x.shape} vs {y.shape}")
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def drift_index(cross: float, rel_t: float, rel_s: float) -> float:
    """``1 - cross / sqrt(rel_t * rel_s)``; NaN when a reliability is not positive.

    Example: reliabilities 0.8 and 0.5, cross-time overlap 0.16: ``1 - 0.16 / 0.632 = 0.747``.
    """
    if not (rel_t > 0 and rel_s > 0) or any(np.isnan(v) for v in (cross, rel_t, rel_s)):
        return float("nan")
    return float(1.0 - cross / np.sqrt(rel_t * rel_s))
