"""The isolation-policy framework: :class:`IsolationPolicy` (per-task critical sets -> owner map
-> per-step masks; overlap resolution; the registry every concrete policy joins by ``name``),
:class:`MaskedStepGuard` (bit-exact freezing across any optimizer's step) and the probe helpers
(``batch_loss``, ``check_probe``, ``taylor_scores``). The concrete policies and ``make_policy``
are in :mod:`epi_utils.isolation.policies` (see its docstring for the semantics).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from epi_utils.importance.drift import turnover
from epi_utils.importance.estimators import top_share_flat
from epi_utils.isolation import refresh
from epi_utils.isolation.state import CompactOwners, LazyMapping, PackedSets, StepMasks
from epi_utils.lm.masked_adamw import FrozenPositions
from epi_utils.lm.train import TrainHook

#: name -> policy class; every concrete subclass of :class:`IsolationPolicy` that sets ``name`` adds
#: itself here when its module is imported (``epi_utils.isolation`` imports all of them).
REGISTRY: dict[str, type["IsolationPolicy"]] = {}
OVERLAPS = ("owner", "freeze")
MODEL_KEYS = ("input_ids", "attention_mask", "labels")


def batch_loss(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean token loss of a causal LM on a batch dict (moved to the model's device).

    A ``DistributedDataParallel`` wrapper is bypassed (``model.module``): measurement passes
    must not trigger DDP's gradient reducer; under DDP every rank measures on the same batches."""
    model = getattr(model, "module", model)
    dev = next(model.parameters()).device
    return model(**{k: batch[k].to(dev) for k in MODEL_KEYS if k in batch}).loss


def check_probe(probe_data, tasks, who: str) -> None:
    if probe_data is None:
        raise ValueError(f"{who} needs probe_data: a mapping task -> list of batches")
    missing = [t for t in tasks if not probe_data.get(t)]
    if missing:
        raise ValueError(f"{who}: probe_data has no batches for tasks {missing}")


def taylor_scores(model, params: Sequence[torch.Tensor], batches: Sequence[Mapping]) -> list[torch.Tensor]:
    """First-order Taylor importance ``|theta * grad|`` averaged over ``batches`` (one fp32 tensor per
    parameter, its shape); gradients by ``torch.autograd.grad`` (``.grad`` and the optimizer untouched)."""
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for batch in batches:
        grads = torch.autograd.grad(batch_loss(model, batch), list(params), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        imp = torch._foreach_mul([p.detach() for p in params], grads)
        torch._foreach_abs_(imp)
        torch._foreach_add_(acc, imp, alpha=1.0 / len(batches))
    return acc


class MaskedStepGuard:
    """Bit-exact freezing of masked elements across one ``optimizer.step()`` of ANY optimizer.

    ``before_step`` zeroes the gradient of masked (False) elements and saves their values and
    optimizer state (every state tensor of the parameter's shape: AdamW's ``exp_avg``,
    ``exp_avg_sq``); ``after_step`` writes them back (state created by this step is set to 0
    there). Decoupled weight decay, momentum and bias correction cannot move a masked element.
    Used by the Trainer callback and the DDP check; the testbed engine has its own guarantee."""

    def __init__(self):
        self._saved: list[tuple] = []
        self._frozen_index = FrozenPositions(max_entries=4096)

    @torch.no_grad()
    def before_step(self, optimizer: torch.optim.Optimizer, params: Mapping[str, torch.Tensor],
                    masks: Mapping[str, torch.Tensor] | None) -> int:
        """Zero masked gradients and save masked values/state; returns the number of frozen elements."""
        self._saved = []
        if not masks:
            return 0
        n_frozen = 0
        state = optimizer.state
        for name, allowed in masks.items():
            if name not in params:
                raise KeyError(f"mask for unknown parameter {name!r}")
            p = params[name]
            idx = self._frozen_index(name, p, allowed)
            if idx.numel() == 0:
                continue
            n_frozen += idx.numel()
            if p.grad is not None:
                p.grad.view(-1).index_fill_(0, idx, 0)
            st = state.get(p)
            saved_state = {k: v.view(-1).index_select(0, idx) for k, v in st.items()
                           if torch.is_tensor(v) and v.shape == p.shape} if st else {}
            self._saved.append((p, idx, p.detach().view(-1).index_select(0, idx), saved_state))
        return n_frozen

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Write the saved values and optimizer state of masked elements back (and forget this
        step's positions: compact policies build new mask tensors at every step)."""
        for p, idx, values, saved_state in self._saved:
            p.data.view(-1).index_copy_(0, idx, values)
            for k, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    if k in saved_state:
                        v.view(-1).index_copy_(0, idx, saved_state[k])
                    else:
                        v.view(-1).index_fill_(0, idx, 0)
        self._saved = []
        self._frozen_index.clear()


class IsolationPolicy(TrainHook):
    """Base of the masking policies: per-task critical sets -> owner map -> per-step masks.

    ``owner[name]``: int8 tensor (parameter shape); -1 free, t >= 0 owned by ``tasks[t]``,
    -2 frozen for everybody (``overlap="freeze"``). Memory: 1 byte/param, plus a cached bool
    mask per task (1 byte/param/task) and the previous critical sets for turnover.
    """

    name = "base"
    #: abstract bases (not buildable by name) set this to False in their own body
    registered = True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("registered", True) and "name" in cls.__dict__:
            if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
                raise TypeError(f"two isolation policies are named {cls.name!r}: "
                                f"{REGISTRY[cls.name].__qualname__} and {cls.__qualname__}")
            REGISTRY[cls.name] = cls

    def __init__(self, *, tasks: Sequence[str], isolation_ratio: float = 0.05, overlap: str = "owner",
                 scope: str = "global", record: bool = True, compact_state: bool = True):
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be a non-empty list of distinct names, got {tasks!r}")
        if len(tasks) > 127:
            raise ValueError(f"at most 127 tasks (int8 owner map), got {len(tasks)}")
        if not 0.0 <= isolation_ratio <= 1.0:
            raise ValueError(f"isolation_ratio must be in [0, 1], got {isolation_ratio}")
        if overlap not in OVERLAPS:
            raise ValueError(f"overlap must be one of {OVERLAPS}, got {overlap!r}")
        self.tasks, self.isolation_ratio, self.overlap, self.scope = list(tasks), float(isolation_ratio), overlap, scope
        self.owner: dict[str, torch.Tensor] | None = None
        self.critical: dict[str, dict[str, torch.Tensor]] = {}
        # flat bookkeeping (set_critical_flat): parameter layout, critical sets, owner vector
        self._names: list[str] | None = None
        self._shapes: list[tuple[int, ...]] | None = None
        self._sizes: list[int] = []
        # compact_state (epi_state): bit-packed critical sets, owners derived from them, no cached
        # masks; False keeps bool sets, an int8 owner vector and a cached mask per task
        self.compact_state = compact_state
        self._crit_flat = PackedSets(packed=compact_state)
        self._owner_flat: CompactOwners | None = None
        self._allowed: dict[str, dict[str, torch.Tensor]] = {}
        self.history: list[dict] = []
        self.record = record
        #: the refresh by the fused kernels (``isolation.refresh``) where they load; False: the eager path
        self.fused_refresh = True
        self.n_mask_updates = 0
        self.pinned: set[str] = set()

    def pin(self, tasks: Sequence[str]) -> None:
        """Pin ``tasks``: their current critical sets are kept and win every overlap from now on."""
        missing = [t for t in tasks if t not in self._crit_flat]
        if missing:
            raise ValueError(f"{self.name}: cannot pin tasks {missing} without a critical set")
        self.pinned.update(tasks)
        self._store_owner(*self._resolve_owners({}))

    # -- mask bookkeeping ----------------------------------------------------------------------
    def set_critical(self, scores: Mapping[str, Mapping[str, torch.Tensor]], *, step: int = 0) -> None:
        """Per-task scores (task -> name -> tensor, already normalised) -> critical sets + owners."""
        first = next(iter(scores.values()))
        names = list(first)
        shapes = [tuple(first[n].shape) for n in names]
        flat = {t: torch.cat([s[n].detach().float().reshape(-1) for n in names]) for t, s in scores.items()}
        self.set_critical_flat(flat, names=names, shapes=shapes, step=step)

    @torch.no_grad()
    def set_critical_flat(self, scores: Mapping[str, torch.Tensor], *, names: Sequence[str],
                          shapes: Sequence[Sequence[int]], step: int = 0) -> None:
        """:meth:`set_critical` on flat score vectors: task -> fp32 ``(n,)`` with the tensors
        ``names`` (of ``shapes``) concatenated in that order. All bookkeeping (critical sets,
        owners, allowed masks) is done on flat vectors; the per-parameter dicts hold views."""
        names, shapes = list(names), [tuple(sh) for sh in shapes]
        sizes = [math.prod(sh) for sh in shapes]
        scores = {t: f for t, f in scores.items() if t not in self.pinned}
        if (names, shapes) != (self._names, self._shapes):  # a new parameter layout: old sets do not apply
            self._names, self._shapes, self._sizes = names, shapes, sizes
            self._crit_flat = PackedSets(packed=self.compact_state)
        for t, f in scores.items():
            if f.numel() != sum(sizes):
                raise ValueError(f"scores of task {t!r} have {f.numel()} entries, parameters {sum(sizes)}")
        kern = refresh.kernel(scores) if self.compact_state and self.fused_refresh else None
        if kern is not None:
            return self._set_critical_fused(scores, sizes=sizes, step=step, kern=kern)
        new = {t: top_share_flat(f, ratio=self.isolation_ratio, scope=self.scope, sizes=sizes)
               for t, f in scores.items()}
        if self.record:
            row = self._history_row(step, {t: turnover({"all": self._crit_flat[t]}, {"all": m})["turnover"]
                                           for t, m in new.items() if t in self._crit_flat})
        self._crit_flat.update(new)
        if not self._crit_flat:
            return
        owner, overlap = self._resolve_owners(scores)
        self._store_owner(owner, overlap)
        self.critical = LazyMapping(list(self._crit_flat), lambda t: self._unflatten(self._crit_flat[t]))
        self.n_mask_updates += 1
        if self.record:
            self._record(row, protected=int(torch.count_nonzero(owner != -1)), n=owner.numel())

    def _set_critical_fused(self, scores: Mapping[str, torch.Tensor], *, sizes: Sequence[int], step: int,
                            kern) -> None:
        """:meth:`set_critical_flat` by the fused refresh kernels (:mod:`epi_utils.isolation.refresh`):
        the same critical sets, owners, history rows, bit for bit, from packed sets only."""
        scores = {t: refresh.Scores(f, kern) for t, f in scores.items()}  # normalisers once per task, at first use
        new = {t: refresh.top_share_set(f, ratio=self.isolation_ratio, scope=self.scope, sizes=sizes, kern=kern)
               for t, f in scores.items()}
        if self.record:
            row = self._history_row(step, {t: refresh.turnover_share(self._crit_flat.stored(t), s, kern)
                                           for t, s in new.items() if t in self._crit_flat})
        for t, s in new.items():
            self._crit_flat.put(t, s)
        if not self._crit_flat:
            return
        stored = {t: self._crit_flat.stored(t) for t in self._crit_flat}
        overlap, n_any = refresh.overlaps(list(stored.values()), kern)
        if self.overlap == "freeze" or not overlap.numel():
            own = self._owners_at(scores, overlap, ())
        else:  # the rule of _owners_at, in one kernel pass over the overlap positions
            own = refresh.overlap_owners(kern, [(s, self.tasks.index(t), None if t in self.pinned else
                                                 (scores[t].kept or scores[t].source) if t in scores else "none")
                                                for t, s in stored.items()], overlap)
        self._store_owner(None, overlap, overlap_owner=own)
        self.critical = LazyMapping(list(self._crit_flat), lambda t: self._unflatten(self._crit_flat[t]))
        self.n_mask_updates += 1
        if self.record:
            self._record(row, protected=n_any - int(torch.count_nonzero(own == -1)), n=sum(sizes))

    def _history_row(self, step: int, turnovers: Mapping[str, float]) -> dict:
        """A refresh's history row before its sets are stored (one builder for the eager and the
        fused refresh): step, update number, each task's turnover (tasks with a previous set) and
        their mean (NaN without any)."""
        row = {"step": int(step), "update": self.n_mask_updates}
        row.update({f"turnover/{t}": v for t, v in turnovers.items()})
        vals = list(turnovers.values())
        row["turnover"] = sum(vals) / len(vals) if vals else float("nan")
        return row

    def _record(self, row: dict, *, protected: int, n: int) -> None:
        """Append ``row`` with the protected share: ``protected`` of the ``n`` elements have an owner
        (a task, or frozen for all)."""
        row["protected_share"] = protected / max(n, 1)
        self.history.append(row)

    def _owners_at(self, scores: Mapping[str, torch.Tensor], overlap: torch.Tensor, claims) -> torch.Tensor:
        """int8 owners of the overlap elements (positions ``overlap``) from ``claims``: ``(task, bool
        membership of its critical set at overlap)`` in the order of the stored sets (see
        :meth:`_resolve_owners`)."""
        if self.overlap == "freeze":
            return torch.full(overlap.shape, -2, dtype=torch.int8, device=overlap.device)
        own = torch.full(overlap.shape, -1, dtype=torch.int8, device=overlap.device)
        best = torch.full(overlap.shape, -math.inf, device=overlap.device)
        for t, m_at in claims:
            s = scores.get(t)
            if t in self.pinned:  # a pinned set wins every overlap
                better = m_at
                best = torch.where(better, torch.full_like(best, math.inf), best)
            elif s is not None:
                s_at = s[overlap].float()
                better = m_at & (s_at > best)
                best = torch.where(better, s_at, best)
            else:
                better = m_at & (own < 0)
                best = torch.where(better, torch.zeros_like(best), best)
            own[better] = self.tasks.index(t)
        return own

    def _resolve_owners(self, scores: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """int8 owner vector from the flat critical sets, and the sorted int64 positions of the
        overlap elements (claimed by two or more sets): an element claimed by one task belongs
        to it; an overlap (claimed by several) goes, with ``overlap="owner"``, to the claimant with
        the highest score (claimants in task order; a task without new scores takes an overlap
        element only if no earlier claimant took it, at score 0), with ``"freeze"`` to nobody (-2).
        Only int8/bool passes over all parameters; scores are compared at overlaps only."""
        ref = next(iter(self._crit_flat.values()))
        count = torch.zeros(ref.shape, dtype=torch.int8, device=ref.device)
        owner = torch.zeros(ref.shape, dtype=torch.int8, device=ref.device)
        for t, m in self._crit_flat.items():
            m8 = m.view(torch.int8)  # bool -> 0/1 bytes, no copy
            count.add_(m8)
            owner.add_(m8 * (self.tasks.index(t) + 1))  # exact where count == 1; overlaps fixed below
        owner.sub_(1)
        overlap = (count > 1).nonzero().squeeze(1)
        if overlap.numel():
            owner[overlap] = self._owners_at(scores, overlap, ((t, m[overlap]) for t, m in self._crit_flat.items()))
        return owner, overlap

    def _store_owner(self, owner: torch.Tensor | None, overlap: torch.Tensor, *,
                     overlap_owner: torch.Tensor | None = None) -> None:
        """Keep the int8 owner vector as :class:`CompactOwners` (derived from the critical sets;
        ``owner`` follows the unique-claimant rule outside ``overlap`` by construction); the fused
        refresh gives only the overlaps' owners (``owner`` None)."""
        sets = {self.tasks.index(t): self._crit_flat.stored(t) for t in self._crit_flat}
        if owner is None:
            self._owner_flat = CompactOwners.from_overlaps(sum(self._sizes), sets, overlap, overlap_owner)
        else:
            self._owner_flat = CompactOwners(owner, sets, legacy=not self.compact_state, overlap_pos=overlap)
        self._crit_flat.forget_recent()
        self.owner = LazyMapping(self._names, lambda n: self._unflatten(self._owner_flat.to_int8())[n])
        self._allowed = {}

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: v.view(sh) for n, v, sh in zip(self._names, torch.split(flat, self._sizes), self._shapes)}

    def allowed_for(self, task: str | None) -> dict[str, torch.Tensor] | None:
        """name -> bool (True = may move) for a step of ``task``; None when nothing is protected."""
        if self.owner is None:
            return None
        if task is None:
            raise ValueError(f"{self.name}: state.batch_task is None; isolation needs task-homogeneous batches "
                             "(TrainConfig.task_homogeneous_batches=True)")
        tid = self.tasks.index(task) if task in self.tasks else -3
        if self.compact_state:  # built per call from the packed sets (a transient, frozen positions only)
            return StepMasks(bits=self._owner_flat.frozen_bits(tid), names=self._names, shapes=self._shapes,
                             sizes=self._sizes)
        if task not in self._allowed:
            self._allowed[task] = self._unflatten(self._owner_flat.allowed(tid))
        return self._allowed[task]

    def update_mask(self, state):
        return self.allowed_for(state.batch_task)
