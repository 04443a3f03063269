"""Compact EPI state: bit-packed critical sets, an owner map derived from them, and the memory model.

EPI (arXiv 2604.14010) keeps, per parameter element and task, an importance EMA and a critical
set (the task's top ``isolation_ratio`` share), and one owner per element. Stored naively that is
``4T`` (fp32 EMA) + ``T`` (bool critical sets) + ``T`` (cached bool masks) + 1 (int8 owner map)
= ``6T + 1`` bytes per parameter. Here:

- :class:`TaskSet`: a subset of ``{0, ..., n-1}`` stored as packed bits (``n / 8`` bytes) or as
  sorted int32 indices (``4 k`` bytes), whichever is smaller (indices win below a share of 1/32).
- :class:`PackedSets`: ``task -> TaskSet``; reading a task returns its bool ``(n,)`` mask
  (unpacked on the fly, a transient), writing packs it.
- :class:`CompactOwners`: the owner vector (int8 ``(n,)``: -1 free, -2 frozen for all, ``t >= 0``
  owned by task ``t``) derived from the critical sets: where exactly one task claims an element it
  owns it, where none does it is free; only the owners of *overlap* elements (claimed by several
  tasks: resolved by score, pinning or freezing) are stored, int8 in position order (the overlap
  positions kept as int32 while 4 B each is below a bit per element, else recomputed from the packed sets). ``allowed(t)`` builds the per-step bool mask of
  task ``t`` from these, so no mask per task is cached. ``legacy=True`` keeps today's int8 vector and a cached bool mask per task (the
  reference for the equality test).
- :func:`epi_state_bytes_per_param`: the memory model (bytes per parameter element) for ``T``
  tasks in each mode, for memory estimates (the GPU rehearsal) and the benchmark.

Bit order: element ``i`` is bit ``i % 8`` (least significant first) of byte ``i // 8``.
"""
from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Callable, Iterable, Mapping

import torch

from epi_utils.lm.bits import bits_at, pack_bits, packed_positions, unpack_bits  # noqa: F401  (re-exported)
from epi_utils.lm.fused_kernels import frozen_bits as fused_frozen_bits
from epi_utils.lm.fused_kernels import patch_bits


def indices_are_smaller(count: int, n: int) -> bool:
    """Whether ``count`` int32 positions (4 bytes each) take less room than a packed bitmap of ``n``
    elements (``ceil(n / 8)`` bytes) and can address it (``n < 2**31``): the rule every packed form
    here (:class:`TaskSet`, the overlap positions of :class:`CompactOwners`) chooses by."""
    return n < 2 ** 31 and 4 * count < math.ceil(n / 8)


class TaskSet:
    """A subset of ``{0, ..., n-1}``: packed bits or sorted int32 indices, whichever is smaller."""

    __slots__ = ("n", "bits", "idx", "count")

    def __init__(self, n: int, *, bits: torch.Tensor | None = None, idx: torch.Tensor | None = None, count: int):
        self.n, self.bits, self.idx, self.count = int(n), bits, idx, int(count)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, *, form: str = "auto") -> "TaskSet":
        """``form``: ``"auto"`` (smaller of the two), ``"bits"`` or ``"indices"``."""
        m = mask.reshape(-1)
        n, k = m.numel(), int(torch.count_nonzero(m))
        if form not in ("auto", "bits", "indices"):
            raise ValueError(f"form must be 'auto', 'bits' or 'indices', got {form!r}")
        if n >= 2 ** 31:
            form = "bits"  # int32 positions cannot address it
        if form == "indices" or (form == "auto" and indices_are_smaller(k, n)):
            return cls(n, idx=m.nonzero().squeeze(1).to(torch.int32), count=k)
        return cls(n, bits=pack_bits(m), count=k)

    @classmethod
    def from_bits(cls, bits: torch.Tensor, n: int, count: int) -> "TaskSet":
        """From a packed uint8 set of ``n`` elements holding ``count`` of them, in the form
        :meth:`from_mask` (``"auto"``) would choose for the same set."""
        if indices_are_smaller(count, n):
            return cls(n, idx=packed_positions(bits, n).to(torch.int32), count=count)
        return cls(n, bits=bits, count=count)

    def packed(self) -> torch.Tensor:
        """The set as packed bits (built from the indices when stored as indices)."""
        if self.bits is not None:
            return self.bits
        out = torch.zeros(self.n, dtype=torch.bool, device=self.idx.device).index_fill_(0, self.idx.to(torch.int64), True)
        return pack_bits(out)

    @classmethod
    def from_indices(cls, idx: torch.Tensor, n: int) -> "TaskSet":
        """From sorted distinct int positions ``idx`` in ``[0, n)``, in the smaller form."""
        k = idx.numel()
        if indices_are_smaller(k, n):
            return cls(n, idx=idx.to(torch.int32), count=k)
        mask = torch.zeros(n, dtype=torch.bool, device=idx.device).index_fill_(0, idx.to(torch.int64), True)
        return cls(n, bits=pack_bits(mask), count=k)

    def to_mask(self) -> torch.Tensor:
        if self.bits is not None:
            return unpack_bits(self.bits, self.n)
        out = torch.zeros(self.n, dtype=torch.bool, device=self.idx.device)
        return out.index_fill_(0, self.idx.to(torch.int64), True)

    def or_into(self, acc: torch.Tensor) -> None:
        """``acc |= self`` for a bool ``(n,)`` accumulator."""
        if self.bits is not None:
            acc |= unpack_bits(self.bits, self.n)
        elif self.count:
            acc.index_fill_(0, self.idx.to(torch.int64), True)

    def at(self, pos: torch.Tensor) -> torch.Tensor:
        """Membership of int positions ``pos`` (bool, shape of ``pos``)."""
        if self.bits is not None:
            return bits_at(self.bits, pos)
        if self.count == 0:
            return torch.zeros(pos.shape, dtype=torch.bool, device=pos.device)
        i = torch.searchsorted(self.idx, pos.to(torch.int32)).clamp_(max=self.count - 1)
        return self.idx[i] == pos.to(torch.int32)

    @property
    def nbytes(self) -> int:
        t = self.bits if self.bits is not None else self.idx
        return t.numel() * t.element_size()


class PackedSets(MutableMapping):
    """``task -> TaskSet``; ``sets[t]`` returns the bool ``(n,)`` mask (a transient), ``sets[t] = m``
    packs it. ``packed=False`` stores the bool tensors themselves (today's layout)."""

    def __init__(self, *, packed: bool = True):
        self.packed = packed
        self._d: dict = {}
        self._recent: dict = {}  # bool masks just written (alive in the caller during a refresh)

    def __getitem__(self, task):
        if task in self._recent:
            return self._recent[task]
        v = self._d[task]
        return v.to_mask() if isinstance(v, TaskSet) else v

    def __setitem__(self, task, mask: torch.Tensor) -> None:
        self._d[task] = TaskSet.from_mask(mask) if self.packed else mask.reshape(-1)
        if self.packed:
            self._recent[task] = mask.reshape(-1)

    def __delitem__(self, task) -> None:
        del self._d[task]
        self._recent.pop(task, None)

    def put(self, task, stored: TaskSet) -> None:
        """Store an already packed set (the fused refresh; no bool mask is kept)."""
        self._d[task] = stored
        self._recent.pop(task, None)

    def forget_recent(self) -> None:
        """Drop the references to the bool masks written by the last refresh (call at its end:
        between refreshes only the packed sets are kept)."""
        self._recent.clear()

    def __iter__(self):
        return iter(self._d)

    def __contains__(self, task) -> bool:  # without unpacking the set (Mapping's default reads it)
        return task in self._d

    def __len__(self) -> int:
        return len(self._d)

    def stored(self, task):
        """The stored form of ``task`` (:class:`TaskSet`, or a bool tensor when not packed)."""
        return self._d[task]

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes if isinstance(v, TaskSet) else v.numel() * v.element_size() for v in self._d.values())


class CompactOwners:
    """Owner vector derived from critical sets (see the module docstring).

    ``owner``: int8 ``(n,)``; ``sets``: ``task id -> TaskSet or bool (n,)`` (the critical sets the
    owner vector was resolved from). Stored beyond the sets: the owner of each *overlap* element
    (claimed by two or more tasks), int8 in position order (1 byte per overlap element), the
    overlap positions as int32 while that is smaller than a bit per element (``4 k < n / 8``: read
    at every step's mask instead of recomputed from the sets; otherwise recomputed), and any element whose owner breaks the
    unique-claimant rule elsewhere (none with the policies of ``isolation``) as a sparse exception.
    ``legacy=True`` stores ``owner`` as is and caches one bool mask per task, as before."""

    def __init__(self, owner: torch.Tensor, sets: Mapping[int, "TaskSet | torch.Tensor"], *, legacy: bool = False,
                 overlap_pos: torch.Tensor | None = None):
        """``overlap_pos``: the sorted positions of the elements claimed by two or more sets, when
        the caller built ``owner`` by the unique-claimant rule elsewhere (``IsolationPolicy`` does):
        only the overlaps' owners are then read (one gather); ``None`` derives the overlaps from the
        sets and stores any element that breaks the rule as a sparse exception (a full check)."""
        owner = owner.reshape(-1)
        self.n, self.legacy, self.device = owner.numel(), legacy, owner.device
        self._allowed: dict[int, torch.Tensor] = {}
        if legacy:
            self._owner = owner
            return
        self._owner = None
        self.sets = dict(sets)
        if overlap_pos is not None:
            self._keep_overlap_positions(overlap_pos)
            self.overlap_owner = owner.index_select(0, overlap_pos.to(torch.int64)).to(torch.int8)
            self.exc_pos, self.exc_owner = TaskSet(self.n, idx=torch.zeros(0, dtype=torch.int32), count=0), \
                torch.zeros(0, dtype=torch.int8)
            return
        mp = self._multi_packed()
        multi = unpack_bits(mp, self.n)
        opos = packed_positions(mp, self.n)
        self._keep_overlap_positions(opos)
        self.overlap_owner = owner.index_select(0, opos).to(torch.int8)
        naive = self._naive(multi)
        pos = ((owner != naive) & ~multi).nonzero().squeeze(1)
        self.exc_pos = TaskSet.from_indices(pos, self.n)
        self.exc_owner = owner[pos].to(torch.int8)

    @classmethod
    def from_overlaps(cls, n: int, sets: Mapping[int, "TaskSet"], overlap_pos: torch.Tensor,
                      overlap_owner: torch.Tensor, *, device=None) -> "CompactOwners":
        """The compact owners of the unique-claimant rule from the sorted overlap positions and
        their owners (what ``CompactOwners(owner, sets, overlap_pos=...)`` keeps of a full owner
        vector, without building one: the fused refresh)."""
        self = cls.__new__(cls)
        self.n, self.legacy, self.device = int(n), False, device or overlap_pos.device
        self._allowed, self._owner, self.sets = {}, None, dict(sets)
        self._keep_overlap_positions(overlap_pos)
        self.overlap_owner = overlap_owner.to(torch.int8)
        self.exc_pos, self.exc_owner = TaskSet(self.n, idx=torch.zeros(0, dtype=torch.int32), count=0), \
            torch.zeros(0, dtype=torch.int8)
        return self

    def _keep_overlap_positions(self, pos: torch.Tensor) -> None:
        """Keep the sorted overlap positions as int32 when smaller than a bit per element."""
        small = indices_are_smaller(pos.numel(), self.n)
        self._overlap_idx = pos.to(torch.int32) if small else None

    def _overlap_positions(self) -> torch.Tensor:
        """Sorted int64 positions of the overlap elements (kept, or recomputed from the sets)."""
        if self._overlap_idx is not None:
            return self._overlap_idx.to(torch.int64)
        return packed_positions(self._multi_packed(), self.n)

    def _packed(self, s) -> torch.Tensor:
        if isinstance(s, TaskSet):
            return s.bits if s.bits is not None else pack_bits(s.to_mask())
        return pack_bits(s)

    def _multi_packed(self) -> torch.Tensor:
        """Packed set of the elements claimed by two or more sets (on packed bytes)."""
        seen = multi = None
        for s in self.sets.values():
            b = self._packed(s)
            if seen is None:
                seen, multi = b.clone(), torch.zeros_like(b)
            else:
                multi |= seen & b
                seen |= b
        if seen is None:
            return torch.zeros(math.ceil(self.n / 8), dtype=torch.uint8, device=self.device)
        return multi

    def _naive(self, multi: torch.Tensor) -> torch.Tensor:
        """Owner by the unique-claimant rule: the claimant where one task claims, -1 where none,
        -3 (never a valid owner) where several do."""
        claim = torch.zeros(self.n, dtype=torch.int8, device=self.device)
        for tid, s in self.sets.items():
            m = s.to_mask() if isinstance(s, TaskSet) else s
            claim.add_(m.view(torch.int8) * (tid + 1))
        claim.sub_(1)
        return claim.masked_fill_(multi, -3)

    def to_int8(self) -> torch.Tensor:
        """The full int8 owner vector ``(n,)`` (a transient when not legacy)."""
        if self.legacy:
            return self._owner
        mp = self._multi_packed()
        owner = self._naive(unpack_bits(mp, self.n))
        owner.index_put_((packed_positions(mp, self.n),), self.overlap_owner)
        if self.exc_pos.count:
            owner[self.exc_pos.to_mask()] = self.exc_owner
        return owner

    def allowed(self, tid: int) -> torch.Tensor:
        """Bool ``(n,)``: True where a step of task id ``tid`` may move the element (free or owned
        by ``tid``). Legacy: cached per task; compact: built from the sets (a transient)."""
        if self.legacy:
            if tid not in self._allowed:
                self._allowed[tid] = (self._owner == -1) | (self._owner == tid)
            return self._allowed[tid]
        others = [self._packed(s) for t, s in self.sets.items() if t != tid]
        if others:  # OR the packed bytes (n/8 each), then unpack once
            acc = others[0].clone()
            for b in others[1:]:
                acc |= b
            allowed = unpack_bits(acc.bitwise_not_(), self.n)
        else:
            allowed = torch.ones(self.n, dtype=torch.bool, device=self.device)
        if self.overlap_owner.numel():
            ov = self.overlap_owner
            pos = self._overlap_positions()
            allowed.index_put_((pos,), (ov == -1) | (ov == tid))
        if self.exc_pos.count:
            pos = self.exc_pos.to_mask()
            allowed[pos] = (self.exc_owner == -1) | (self.exc_owner == tid)
        return allowed

    def frozen_bits(self, tid: int) -> torch.Tensor:
        """Packed uint8 ``(ceil(n / 8),)`` set of the elements a step of task id ``tid`` may NOT
        move (the complement of :meth:`allowed`): the OR of the other tasks' packed sets (n / 8
        bytes each) with the overlap owners and exceptions written in bit by bit; no bool vector
        of n elements and no positions (the fused kernels of ``MaskedAdamW`` read it directly)."""
        if self.legacy:
            return pack_bits(~self.allowed(tid))
        tids = list(self.sets)
        packed = [self._packed(self.sets[t]) for t in tids]
        acc = fused_frozen_bits(packed, tids.index(tid) if tid in tids else -1, self.overlap_owner, tid,
                                pos=self._overlap_idx) if packed else None
        if acc is None:  # no kernels: OR of the others' packed bytes, overlap owners written at their positions
            others = [b for t, b in zip(tids, packed) if t != tid]
            if not others:
                acc = torch.zeros(math.ceil(self.n / 8), dtype=torch.uint8, device=self.device)
            else:
                acc = others[0].clone()
                for b in others[1:]:
                    acc |= b
            if self.overlap_owner.numel():
                ov = self.overlap_owner
                patch_bits(acc, self._overlap_positions(), (ov != -1) & (ov != tid))
        if self.exc_pos.count:
            patch_bits(acc, self.exc_pos.to_mask().nonzero().squeeze(1),
                       (self.exc_owner != -1) & (self.exc_owner != tid))
        return acc

    def frozen_positions(self, tid: int) -> torch.Tensor:
        """Sorted int64 positions of the elements a step of task id ``tid`` may NOT move: the
        complement of :meth:`allowed` (equal to ``(~allowed(tid)).nonzero()``), built from the
        OR of the other tasks' packed sets with the overlap owners written in, by one ``nonzero``
        (no negation of the bool vector, no per-tensor masks)."""
        if self.legacy:
            return (~self.allowed(tid)).nonzero().squeeze(1)
        others = [self._packed(s) for t, s in self.sets.items() if t != tid]
        if not others:
            frozen = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        else:
            acc = others[0].clone()
            for b in others[1:]:
                acc |= b
            frozen = unpack_bits(acc, self.n)
        if self.overlap_owner.numel():
            ov = self.overlap_owner
            frozen.index_put_((self._overlap_positions(),), (ov != -1) & (ov != tid))
        if self.exc_pos.count:
            frozen[self.exc_pos.to_mask()] = (self.exc_owner != -1) & (self.exc_owner != tid)
        return frozen.nonzero().squeeze(1)

    @property
    def nbytes(self) -> int:
        """Bytes held beyond the critical sets (which the policy holds anyway)."""
        if self.legacy:  # its cached masks are the policy's cached masks (counted there)
            return self._owner.numel()
        extra = self.exc_pos.nbytes + self.exc_owner.numel() if self.exc_pos.count else 0
        kept = self._overlap_idx.numel() * 4 if self._overlap_idx is not None else 0
        return self.overlap_owner.numel() + kept + extra


class StepMasks(Mapping):
    """One step's update masks (``name -> bool``, True = may move) over tensors of ``shapes`` laid
    end to end (as a compact policy derives them), given by the sorted flat int64 positions of the
    frozen elements (``frozen``) or by their packed bitmap (``bits``, uint8 ``(ceil(n / 8),)``, as
    :func:`pack_bits`; the positions are then derived on first use). A bool mask is built only when
    a value is read (all of them at once, as views of one base); :meth:`frozen_positions` gives each
    tensor's local positions (one vectorised pass, no per-tensor ``nonzero``) and :meth:`frozen_bits`
    the bitmap: ``MaskedAdamW`` uses either directly, checking :meth:`layout` against its own."""

    def __init__(self, frozen: torch.Tensor | None = None, *, names, shapes, sizes, bits: torch.Tensor | None = None):
        if (frozen is None) == (bits is None):
            raise ValueError("StepMasks needs exactly one of frozen (positions) and bits (packed bitmap)")
        self._frozen, self._bits = frozen, bits
        self._names, self._shapes, self._sizes = list(names), list(shapes), list(sizes)
        self._index = {n: i for i, n in enumerate(self._names)}
        self._masks: dict[str, torch.Tensor] | None = None
        self._local: dict[str, torch.Tensor] | None = None

    def layout(self) -> tuple[list[str], list[int]]:
        """``(names, sizes)`` of the tensors in layout order."""
        return self._names, self._sizes

    def frozen_bits(self) -> torch.Tensor | None:
        """The packed bitmap of the frozen elements over the layout (None when built from positions)."""
        return self._bits

    def _positions(self) -> torch.Tensor:
        if self._frozen is None:
            self._frozen = unpack_bits(self._bits, sum(self._sizes)).nonzero().squeeze(1)
        return self._frozen

    def frozen_positions(self) -> dict[str, torch.Tensor]:
        """``name -> int64 (k,)``: sorted positions of the frozen elements in ``param.view(-1)``."""
        if self._local is None:
            frozen = self._positions()
            dev = frozen.device
            starts = torch.tensor([0] + self._sizes, device=dev).cumsum(0)
            bounds = torch.searchsorted(frozen, starts).tolist()
            counts = [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:])]
            local = frozen - torch.repeat_interleave(starts[:-1], torch.tensor(counts, device=dev))
            self._local = dict(zip(self._names, torch.split(local, counts)))
        return self._local

    def flat_frozen(self) -> tuple[list[str], torch.Tensor]:
        """``(names, positions)``: the tensors in layout order and the sorted frozen positions over
        them laid end to end (``MaskedAdamW`` restores its flat moments with them in one pass)."""
        return self._names, self._positions()

    def __getitem__(self, name):
        if self._masks is None:
            frozen = self._positions()
            base = torch.ones(sum(self._sizes), dtype=torch.bool, device=frozen.device)
            base.index_fill_(0, frozen, False)
            self._masks = {n: v.view(sh) for n, v, sh in zip(self._names, torch.split(base, self._sizes),
                                                               self._shapes)}
        return self._masks[name]

    def __contains__(self, name) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class LazyMapping(Mapping):
    """Read-only mapping whose values are computed on access by ``fn(key)`` (not cached)."""

    def __init__(self, keys: Iterable, fn: Callable):
        self._keys, self._fn = list(keys), fn

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._fn(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


# ---------------------------------------------------------------------------------------------
MODES = ("legacy", "fp32", "bf16", "lean")


def epi_state_bytes_per_param(n_tasks: int, *, mode: str = "fp32", ratio: float = 0.05,
                              overlap_share: float | None = None, block_size: int = 64,
                              estimator: str = "taylor") -> dict[str, float]:
    """EPI's persistent state in bytes per parameter element for ``n_tasks`` tasks (a model).

    ``mode``: ``"legacy"`` (fp32 EMA, bool critical sets, a cached bool mask per task, int8 owner
    map: ``6T + 1``; the layout before issue 19), ``"fp32"`` (fp32 EMA, compact sets and owners:
    the EPI policy's default, whose masks equal the legacy ones), ``"bf16"`` (bf16 EMA, compact:
    ``state_dtype=torch.bfloat16``; masks differ from fp32 in ~0.01-0.4% of critical elements,
    measured in ``tests/test_epi_state_memory.py``), ``"lean"`` (fp32 EMA per block of
    ``block_size`` elements, compact).
    ``ratio``: the isolation ratio (critical-set share per task). ``overlap_share``: share of
    elements claimed by two or more tasks (the owner exceptions); ``None`` takes the worst case
    ``min(1, T * ratio / 2)``. ``estimator="sensitivity"`` doubles the EMA (uncertainty EMA).
    Returns the parts (``ema``, ``critical_sets``, ``owners``, ``cached_masks``) and ``total``;
    AdamW's own moments are 8 bytes per parameter (fp32 ``exp_avg`` + ``exp_avg_sq``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if n_tasks < 1 or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"n_tasks must be >= 1 and ratio in [0, 1], got {n_tasks}, {ratio}")
    T = int(n_tasks)
    ema_per_task = {"legacy": 4.0, "fp32": 4.0, "bf16": 2.0, "lean": 4.0 / block_size}[mode]
    ema = T * ema_per_task * (2 if estimator == "sensitivity" else 1)
    if mode == "legacy":
        parts = {"ema": ema, "critical_sets": float(T), "owners": 1.0, "cached_masks": float(T)}
    else:
        ovl = min(1.0, T * ratio / 2) if overlap_share is None else float(overlap_share)
        sets = T * min(1 / 8, 4 * ratio)
        owners = ovl + (4 * ovl if 4 * ovl < 1 / 8 else 0.0)  # int8 owner (+ int32 position while < 1 bit)
        parts = {"ema": ema, "critical_sets": sets, "owners": owners, "cached_masks": 0.0}
    parts["total"] = sum(parts.values())
    parts["adamw"] = 8.0
    return parts


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def measured_bytes_per_param(policy, *, optimizer=None) -> dict[str, float]:
    """Bytes per parameter element that an isolation ``policy`` (and, if given, the frozen-position
    cache of a ``MaskedAdamW`` ``optimizer``) holds now, by part: ``ema`` (tracker state, all
    tasks), ``critical_sets``, ``owners``, ``cached_masks``, ``optimizer_positions``; ``total``."""
    tr = getattr(policy, "tracker", None)
    n = sum(policy._sizes) if policy._sizes else (sum(p.numel() for p in tr.params) if tr is not None else 0)
    if n == 0:
        return {"ema": 0.0, "critical_sets": 0.0, "owners": 0.0, "cached_masks": 0.0, "optimizer_positions": 0.0,
                "total": 0.0}
    ema = 0
    if tr is not None:
        for task in tr.ema:
            if task in tr._flat:
                ema += _nbytes(tr._flat[task]) + (_nbytes(tr._flat_unc[task]) if task in tr._flat_unc else 0)
            else:
                ema += sum(_nbytes(t) for t in tr.ema[task]) + sum(_nbytes(t) for t in tr.unc.get(task, []))
    owners = policy._owner_flat.nbytes if policy._owner_flat is not None else 0
    cached = sum(sum(v.numel() for v in d.values()) for d in policy._allowed.values())
    positions = 0
    if optimizer is not None and hasattr(optimizer, "_frozen_index"):
        positions = sum(_nbytes(idx) for _, idx in optimizer._frozen_index._cache.values())
    out = {"ema": ema / n, "critical_sets": policy._crit_flat.nbytes / n, "owners": owners / n,
           "cached_masks": cached / n, "optimizer_positions": positions / n}
    out["total"] = sum(out.values())
    return out
