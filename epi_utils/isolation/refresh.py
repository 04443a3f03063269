"""EPI's mask refresh on packed sets with the fused kernels (issue 34): the same critical sets,
owners and turnover numbers as the eager path of ``IsolationPolicy.set_critical_flat``, bit for bit.

Per task, one kernel call (:func:`epi_utils.lm.fused_kernels.top_k_bits`) reads the flat fp32
importance EMA, divides each tensor's slice by its normaliser (computed by torch as
``ImportanceTracker.flat_scores`` does, so the scores are the same floats) and writes the exact
top-``k`` straight into a packed set: a stratified sample brackets the threshold, one pass sets the
elements above the bracket and collects those inside it, a selection among them finds the ``k``-th
largest value, and ties at it go to the lowest positions (as ``_exact_topk_mask``: a stable
descending sort's first ``k``). Turnover is counted on the packed bytes (popcount of the AND), the
overlap positions come from one pass over the packed sets, and only the overlap elements' scores
are read to resolve their owners (the policy's own code). No bool mask of ``n`` elements and no
full owner vector are built.

The eager path stays the reference and the fallback: without the kernels (no C compiler,
``EPI_FUSED_KERNELS=0``), on non-CPU tensors, for the legacy state, and for a task whose scores
hold a NaN (its order of NaN is ``torch.kthvalue``'s: the eager path keeps it)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from epi_utils.importance.drift import turnover_from_counts
from epi_utils.importance.estimators import SCOPES, top_share_flat
from epi_utils.isolation.state import TaskSet
from epi_utils.lm import fused_kernels as fk


def kernel(scores) -> object | None:
    """The loaded kernels when every score vector lives on the CPU, else None (eager path)."""
    for f in scores.values():
        params = getattr(getattr(f, "tracker", None), "params", None)
        dev = (params[0].device if params else torch.device("cpu")) if params is not None else f.device
        if dev.type != "cpu":
            return None
    return fk.lib()


def sample_size(n: int) -> int:
    """Scores sampled to bracket the threshold (``_exact_topk_mask``'s sizes: 20k for a tiny model
    up to 200k from 10M scores); 0 (a histogram pass instead) up to 200k scores."""
    return 0 if n <= 200_000 else min(200_000, max(20_000, n // 50))


def _source(scores, kern=None) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
    """``(buffer, sizes, divisors)`` of a score vector for the kernel (see ``LazyFlatScores.source``;
    with ``kern`` its layer means by ``fused_kernels.layer_means``, torch's floats in one call);
    a plain tensor (or a tracker state the source cannot describe) is its own fp32 buffer."""
    means = None if kern is None else (lambda buf, sizes: fk.layer_means(kern, buf, sizes))
    src = scores.source(means) if hasattr(scores, "source") else None
    if src is not None:
        return src
    flat = scores.materialize() if hasattr(scores, "materialize") else scores
    flat = flat.detach().float().reshape(-1).contiguous()
    return flat, [flat.numel()], None


class Scores:
    """One task's score vector as the kernels read it: ``source`` = ``(buffer, sizes, divisors)``
    (see ``LazyFlatScores.source``), built once per refresh at first use (the normalisers' pass
    right before the selection's, which then reads the buffer from the cache); ``scores[pos]``
    reads the scores at sorted int positions (the same floats as ``LazyFlatScores[pos]`` or
    ``tensor[pos]``)."""

    def __init__(self, scores, kern):
        self.scores, self.kern = scores, kern
        self._source = None
        self.kept = None  # (wide, keys) from top_share_set: the set's scores without reading the buffer again

    @property
    def source(self) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
        if self._source is None:
            self._source = _source(self.scores, self.kern)
        return self._source

    def numel(self) -> int:
        return self.scores.numel()

    def __getitem__(self, pos: torch.Tensor) -> torch.Tensor:
        return fk.scores_at(self.kern, *self.source, pos)


def top_share_set(scores, *, ratio: float, scope: str = "global", sizes: Sequence[int] | None = None,
                  kern=None) -> TaskSet:
    """:func:`epi_utils.importance.estimators.top_share_flat` as a :class:`TaskSet` (the form
    ``TaskSet.from_mask`` would choose), by the kernel; the eager path where the kernel cannot
    decide (a NaN score) or is missing. ``scores``: a tensor, ``LazyFlatScores`` or :class:`Scores`."""
    n = scores.numel()
    bad_scope = scope not in SCOPES or (scope == "layer" and (sizes is None or sum(sizes) != n))
    eager = scores.scores if isinstance(scores, Scores) else scores
    if kern is None or bad_scope or not 0.0 <= ratio <= 1.0:
        return TaskSet.from_mask(top_share_flat(eager, ratio=ratio, scope=scope, sizes=sizes))
    keep = isinstance(scores, Scores)
    v, tsizes, div = scores.source if keep else _source(scores)
    out = torch.zeros(math.ceil(n / 8), dtype=torch.uint8)
    kept = dict(wide=torch.zeros_like(out), keys=fk.KeyBuffer(kern)) if keep else {}  # the kernel sizes the keys
    bounds = [0, n] if scope == "global" else [0, *torch.tensor(list(sizes)).cumsum(0).tolist()]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        k = int(round(ratio * (hi - lo)))
        if fk.top_k_bits(kern, v, tsizes, div, k, out, lo=lo, hi=hi, sample=sample_size(hi - lo), **kept) != 0:
            return TaskSet.from_mask(top_share_flat(eager, ratio=ratio, scope=scope, sizes=sizes))
    if keep:
        keys = kept["keys"].take()
        if keys is not None:  # None: a range was wholly in the set, its scores are read again
            scores.kept = (kept["wide"], keys)
    return TaskSet.from_bits(out, n, fk.and_count(kern, out, out))


def turnover_share(prev: TaskSet, new: TaskSet, kern) -> float:
    """``epi_utils.importance.drift.turnover(prev, new)["turnover"]`` from the packed sets: the same
    counts (the elements in both by a popcount of the AND), the same formula (``turnover_from_counts``)."""
    return turnover_from_counts(prev.count, new.count, fk.and_count(kern, prev.packed(), new.packed()))["turnover"]


def overlaps(sets: Sequence[TaskSet], kern) -> tuple[torch.Tensor, int]:
    """Sorted int64 positions of the elements in two or more of ``sets``, and the number of elements
    in any of them (one pass over the packed bytes)."""
    return fk.overlaps(kern, [s.packed() for s in sets])


def overlap_owners(kern, claims, overlap: torch.Tensor) -> torch.Tensor:
    """``IsolationPolicy._owners_at`` (``overlap="owner"``) by one kernel pass: ``claims`` =
    ``[(TaskSet, task id, source)]`` in the stored order (see ``fused_kernels.overlap_owners``)."""
    return fk.overlap_owners(kern, [(s.packed(), tid, src) for s, tid, src in claims], overlap)
