"""Isolation policies for SFT, as hooks of the testbed's engine (``epi_utils.lm.train.TrainHook``).

Every masking policy keeps, per task ``t``, a *critical set* ``M_t``: the top ``isolation_ratio``
share of that task's importance (the same ratio for every policy, so that only *which*
parameters are isolated differs). A task's critical parameters are protected from the other
tasks' updates: on a step whose task-homogeneous batch belongs to task ``s`` an element may move
iff it is free or owned by ``s``. Overlaps (an element critical for several tasks) are resolved
by ``overlap``: ``"owner"`` (default; the element goes to the claimant with the highest
layer-normalised score and only that task may move it) or ``"freeze"`` (nobody may move it).
The engine guarantees that a masked element does not change at all (gradient, AdamW moments,
decoupled weight decay).

Policies (``make_policy(name, ...)``):

- ``full_sft``: no isolation.
- ``static_cpi``: CPI-FT (arXiv 2508.21741) style. Before training, a probe fine-tune per task
  (``probe_steps`` AdamW steps at ``probe_lr`` on that task's probe batches, from the same
  starting weights, which are restored afterwards) finds the task's core region as the top share
  of update magnitude ``|theta_probe - theta_0|``. Cores stay protected for the whole run.
  Deviation: CPI-FT also transplants cores and merges the probe models before a final mixed SFT;
  here only the isolation part is kept, so that all policies start from the same weights.
- ``static_grad``: masks from gradient importance (first-order Taylor ``|theta * grad|``,
  averaged over the probe batches) measured once at the start, then fixed.
- ``epi``: Evolving Parameter Isolation (arXiv 2604.14010): an online per-task EMA of gradient
  importance (:class:`epi_utils.importance.estimators.ImportanceTracker`, layer-wise normalised) is updated
  after every backward pass of that task; after ``warmup_steps`` the per-task masks are recomputed
  every ``mask_update_interval`` steps, so emerging critical parameters become protected and
  parameters that stopped being critical are released. No protection before the warmup ends.
  Replay batches are used ONLY to measure gradients (``torch.autograd.grad``; ``.grad`` and the
  optimizer are untouched): they never train the model.
- ``epi_replay`` / ``epi_frozen``: EPI with the protection of *finished* tasks (tasks of earlier
  stages of a sequential schedule) defined explicitly. ``epi`` (``finished="ema"``) folds one
  replay batch into a finished task's EMA at each refresh, so its protection drifts with a noisy
  estimate (measured: most of the weights it owned for stage 0 changed in stage 1).
  ``epi_replay`` (``finished="replay"``) re-estimates a finished task's importance at each refresh
  as the mean Taylor score over ALL its ``replay`` batches at the current weights (no EMA with stale
  values); ``epi_frozen`` (``finished="frozen"``) refreshes every task's mask at the end of its
  stage and then pins it: a pinned critical set is never recomputed and wins every overlap.
- ``random_mask``: per-task random critical sets of the same share (seeded), fixed: the control
  that separates "which parameters" from "how many".
- ``epi_warmup_frozen``: EPI whose refreshes stop after the first refresh that covers every task
  (same estimator, same first masks, then frozen); ``random_refresh``: random sets redrawn on EPI's
  schedule; ``frozen_cores``: given core regions frozen for every task (CPI-FT's final mixed SFT).
- ``cpi_after_stage``, ``importance_after_stage``, ``random_after_stage``
  (:mod:`epi_utils.isolation.stage_policies`): full SFT within a stage; at the end of a task's stage its
  critical set is taken from the task's accumulated update during its stage (CPI-FT's criterion
  ``|sum of its updates|`` in the right place), from checkpoint Taylor importance on its probe
  batches, or at random, and pinned for the rest of the run.
- ``ewc`` (:mod:`epi_utils.isolation.stage_policies`): Elastic Weight Consolidation, the
  regularisation baseline (no masks).

In a sequential schedule the static policies (and mixed-mode EWC) measure every task's probe
batches at the start, i.e. they see later tasks' data before training on them; EPI measures a task
only from its own training steps (and its replay buffer once it is finished).

Pinned tasks (:meth:`IsolationPolicy.pin`): a pinned task's critical set is kept as it is (new
scores for it are ignored) and it owns every element of its set, overlaps included.

Probe batches: ``probe_data`` maps task -> list of batches (dicts with ``input_ids``,
``attention_mask``, ``labels``); ``epi_utils.isolation_study.inputs.batches_for`` builds them.
Batch tasks come from ``state.batch_task``; ``None`` raises (masks need task-homogeneous batches).
Gradient accumulation: EPI updates importance once per ``after_backward`` call.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from epi_utils.importance.drift import turnover
from epi_utils.importance.estimators import ImportanceTracker, normalize_scores, top_share_flat
from epi_utils.isolation.state import CompactOwners, LazyMapping, PackedSets, StepMasks, measured_bytes_per_param
from epi_utils.lm.masked_adamw import FrozenPositions
from epi_utils.lm.train import TrainHook

#: name -> policy class; every concrete subclass of :class:`IsolationPolicy` that sets ``name`` adds
#: itself here when its module is imported (``epi_utils.isolation`` imports all of them).
REGISTRY: dict[str, type["IsolationPolicy"]] = {}
FINISHED = ("ema", "replay", "frozen")
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
        new = {t: top_share_flat(f, ratio=self.isolation_ratio, scope=self.scope, sizes=sizes)
               for t, f in scores.items()}
        if self.record:
            row = {"step": int(step), "update": self.n_mask_updates}
            for t, m in new.items():
                if t in self._crit_flat:
                    row[f"turnover/{t}"] = turnover({"all": self._crit_flat[t]}, {"all": m})["turnover"]
            vals = [v for k, v in row.items() if k.startswith("turnover/")]
            row["turnover"] = sum(vals) / len(vals) if vals else float("nan")
        self._crit_flat.update(new)
        if not self._crit_flat:
            return
        owner, overlap = self._resolve_owners(scores)
        self._store_owner(owner, overlap)
        self.critical = LazyMapping(list(self._crit_flat), lambda t: self._unflatten(self._crit_flat[t]))
        self.n_mask_updates += 1
        if self.record:
            row["protected_share"] = int(torch.count_nonzero(owner != -1)) / max(owner.numel(), 1)
            self.history.append(row)

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
            if self.overlap == "freeze":
                owner[overlap] = -2
            else:
                own = torch.full(overlap.shape, -1, dtype=torch.int8, device=ref.device)
                best = torch.full(overlap.shape, -math.inf, device=ref.device)
                for t, m in self._crit_flat.items():
                    m_at, s = m[overlap], scores.get(t)
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
                owner[overlap] = own
        return owner, overlap

    def _store_owner(self, owner: torch.Tensor, overlap: torch.Tensor) -> None:
        """Keep the int8 owner vector as :class:`CompactOwners` (derived from the critical sets;
        ``owner`` follows the unique-claimant rule outside ``overlap`` by construction)."""
        sets = {self.tasks.index(t): self._crit_flat.stored(t) for t in self._crit_flat}
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


class FullSFT(IsolationPolicy):
    """No isolation."""

    name = "full_sft"

    def update_mask(self, state):
        return None


class RandomMask(IsolationPolicy):
    """Per-task random critical sets of the same share, fixed for the run."""

    name = "random_mask"

    def __init__(self, *, seed: int = 0, **kw):
        super().__init__(**kw)
        self.seed = seed

    def on_train_begin(self, state):
        g = torch.Generator().manual_seed(self.seed)
        scores = {t: {n: torch.rand(p.shape, generator=g).to(p.device) for n, p in state.named_params.items()}
                  for t in self.tasks}
        self.set_critical(scores, step=state.step)


class StaticGrad(IsolationPolicy):
    """Masks from Taylor importance averaged over probe batches at the start, then fixed."""

    name = "static_grad"

    def __init__(self, *, probe_data: Mapping[str, Sequence[Mapping]] | None = None, normalize: str = "layer_mean", **kw):
        super().__init__(**kw)
        check_probe(probe_data, self.tasks, self.name)
        self.probe_data, self.normalize = probe_data, normalize

    def on_train_begin(self, state):
        names, params = list(state.named_params), list(state.named_params.values())
        scores = {t: normalize_scores(dict(zip(names, taylor_scores(state.model, params, self.probe_data[t]))),
                                      how=self.normalize) for t in self.tasks}
        self.set_critical(scores, step=state.step)


class StaticCPI(IsolationPolicy):
    """CPI-FT core regions: top share of ``|theta_probe - theta_0|`` after a per-task probe fine-tune."""

    name = "static_cpi"

    def __init__(self, *, probe_data: Mapping[str, Sequence[Mapping]] | None = None, probe_steps: int = 20,
                 probe_lr: float = 1e-3, normalize: str = "layer_mean", **kw):
        super().__init__(**kw)
        check_probe(probe_data, self.tasks, self.name)
        if probe_steps < 1:
            raise ValueError(f"probe_steps must be >= 1, got {probe_steps}")
        self.probe_data, self.probe_steps, self.probe_lr, self.normalize = probe_data, probe_steps, probe_lr, normalize

    def on_train_begin(self, state):
        names, params = list(state.named_params), list(state.named_params.values())
        theta0 = [p.detach().clone() for p in params]
        scores = {}
        for t in self.tasks:
            opt = torch.optim.AdamW(params, lr=self.probe_lr, weight_decay=0.0)
            batches = self.probe_data[t]
            for i in range(self.probe_steps):
                opt.zero_grad(set_to_none=True)
                batch_loss(state.model, batches[i % len(batches)]).backward()
                opt.step()
            moved = {n: (p.detach() - p0).abs() for n, p, p0 in zip(names, params, theta0)}
            scores[t] = normalize_scores(moved, how=self.normalize)
            with torch.no_grad():
                for p, p0 in zip(params, theta0):
                    p.copy_(p0)
            opt.zero_grad(set_to_none=True)
            del opt
        self.set_critical(scores, step=state.step)


class EPI(IsolationPolicy):
    """Evolving Parameter Isolation: per-task masks from online EMA importance, refreshed.

    ``finished``: how a task that is no longer trained keeps its protection: ``"ema"`` (fold
    ``replay`` gradients into its EMA at each refresh), ``"replay"`` (replace its scores by the mean
    Taylor score over all its ``replay`` batches at each refresh), ``"frozen"`` (refresh its mask
    at the end of its stage, then pin it; ``replay`` unused)."""

    name = "epi"

    def __init__(self, *, mask_update_interval: int = 20, warmup_steps: int = 20, estimator: str = "taylor",
                 beta: float = 0.9, normalize: str = "layer_mean", state_dtype: torch.dtype = torch.float32,
                 block_size: int | None = None, replay: Mapping[str, Sequence[Mapping]] | None = None,
                 finished: str = "ema", fuse_importance: bool = True, **kw):
        super().__init__(**kw)
        self.fuse_importance = fuse_importance  # fold importance into MaskedAdamW's gradient pass
        if mask_update_interval < 1 or warmup_steps < 0:
            raise ValueError(f"mask_update_interval must be >= 1 and warmup_steps >= 0, got "
                             f"{mask_update_interval}, {warmup_steps}")
        if finished not in FINISHED:
            raise ValueError(f"finished must be one of {FINISHED}, got {finished!r}")
        if finished == "replay" and not replay:
            raise ValueError("epi with finished='replay' needs replay: a mapping task -> list of batches")
        self.interval, self.warmup, self.finished = int(mask_update_interval), int(warmup_steps), finished
        self.tracker_kw = dict(estimator=estimator, beta=beta, normalize=normalize, state_dtype=state_dtype,
                               block_size=block_size)
        self.replay = replay
        self.tracker: ImportanceTracker | None = None
        self.last_seen: dict[str, int] = {}
        self.stage_of: dict[str, int] = {}
        self._last_update_step = -1

    def on_train_begin(self, state):
        self.tracker = ImportanceTracker(state.named_params, **self.tracker_kw)

    def on_stage_begin(self, state):
        done = [t for t, k in self.stage_of.items() if k < state.stage and t not in self.pinned]
        if self.finished == "frozen" and done:
            self._refresh(state, replay=False)
            self.pin([t for t in done if t in self._crit_flat])

    def after_backward(self, state):
        if state.batch_task is None:
            raise ValueError("epi: state.batch_task is None; EPI needs task-homogeneous batches")
        opt = getattr(state, "optimizer", None)
        if self.fuse_importance and hasattr(opt, "defer_importance"):
            opt.defer_importance(self.tracker, state.batch_task)  # same gradients, one pass fewer
        else:
            self.tracker.update(state.batch_task)
        self.last_seen[state.batch_task] = state.step
        self.stage_of.setdefault(state.batch_task, state.stage)

    def _stale(self, state) -> list[str]:
        return [t for t, s in self.last_seen.items() if state.step - s > self.interval and t not in self.pinned
                and self.replay and self.replay.get(t)]

    def refresh_from_replay(self, state) -> list[str]:
        """``finished="ema"``: fold the replay gradients of tasks not trained for ``interval`` steps
        into their EMA (gradients only, nothing is trained); returns the refreshed tasks."""
        stale = self._stale(state)
        params = list(self.tracker.params)
        for t in stale:
            for batch in self.replay[t]:
                grads = torch.autograd.grad(batch_loss(state.model, batch), params, allow_unused=True)
                self.tracker.update(t, [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)])
        return stale

    def _refresh(self, state, *, replay: bool = True) -> None:
        tr = self.tracker
        flush = getattr(getattr(state, "optimizer", None), "flush_importance", None)
        if flush is not None:
            flush()  # a deferred importance update of this step enters the refresh
        fresh = {}
        if replay and self.finished == "ema":
            self.refresh_from_replay(state)
        elif replay and self.finished == "replay":
            for t in self._stale(state):
                acc = taylor_scores(state.model, tr.params, self.replay[t])
                fresh[t] = torch.cat([s.reshape(-1) for s in normalize_scores(
                    dict(zip(tr.names, acc)), how=tr.normalize).values()])
        scores = {t: fresh[t] if t in fresh else tr.lazy_flat_scores(t) for t in tr.tasks if t not in self.pinned}
        self.set_critical_flat(scores, names=tr.names, shapes=[p.shape for p in tr.params], step=state.step)

    def update_mask(self, state):
        due = state.step >= self.warmup and (state.step - self.warmup) % self.interval == 0
        if due and state.step != self._last_update_step and self.tracker.tasks:
            self._refresh(state)
            self._last_update_step = state.step
        return self.allowed_for(state.batch_task)

    def state_bytes_per_param(self) -> dict[str, float]:
        """EPI state per parameter element, measured (:func:`epi_utils.isolation.state.measured_bytes_per_param`)."""
        return measured_bytes_per_param(self)


class EPIReplay(EPI):
    """EPI whose finished tasks are re-estimated from all their replay batches at each refresh."""

    name = "epi_replay"

    def __init__(self, **kw):
        super().__init__(**{**kw, "finished": "replay"})


class EPIFrozen(EPI):
    """EPI whose finished tasks' masks are frozen (pinned) at the end of their stage."""

    name = "epi_frozen"

    def __init__(self, **kw):
        super().__init__(**{**kw, "finished": "frozen"})


class EPIWarmupFrozen(EPI):
    """EPI whose refreshes stop after the first one that gives every task a mask: the same
    estimator and the same first masks as :class:`EPI` on the same run, then frozen (the ablation
    of "evolving" in mixed multi-task SFT). The importance EMA is no longer updated once the masks
    are frozen (it would not be read again)."""

    name = "epi_warmup_frozen"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.frozen_at: int | None = None

    def after_backward(self, state):
        if self.frozen_at is None:
            super().after_backward(state)

    def update_mask(self, state):
        if self.frozen_at is None:
            allowed = super().update_mask(state)
            if self.n_mask_updates and all(t in self._crit_flat for t in self.tasks):
                self.frozen_at = state.step
            return allowed
        return self.allowed_for(state.batch_task)


class RandomRefresh(IsolationPolicy):
    """Random per-task critical sets of the same share, drawn anew on EPI's schedule (first at
    ``warmup_steps``, then every ``mask_update_interval`` steps; no protection before): the control
    for "the masks change" without any importance signal."""

    name = "random_refresh"

    def __init__(self, *, mask_update_interval: int = 20, warmup_steps: int = 20, seed: int = 0, **kw):
        super().__init__(**kw)
        if mask_update_interval < 1 or warmup_steps < 0:
            raise ValueError(f"mask_update_interval must be >= 1 and warmup_steps >= 0, got "
                             f"{mask_update_interval}, {warmup_steps}")
        self.interval, self.warmup, self.seed = int(mask_update_interval), int(warmup_steps), seed
        self._last_update_step = -1

    def update_mask(self, state):
        due = state.step >= self.warmup and (state.step - self.warmup) % self.interval == 0
        if due and state.step != self._last_update_step:
            g = torch.Generator().manual_seed(self.seed * 100_003 + state.step)
            names = list(state.named_params)
            shapes = [tuple(p.shape) for p in state.named_params.values()]
            n = sum(math.prod(sh) for sh in shapes)
            dev = next(iter(state.named_params.values())).device
            scores = {t: torch.rand(n, generator=g).to(dev) for t in self.tasks}
            self.set_critical_flat(scores, names=names, shapes=shapes, step=state.step)
            self._last_update_step = state.step
        return self.allowed_for(state.batch_task)


class FrozenCores(IsolationPolicy):
    """Given core regions frozen for every task (CPI-FT's final mixed SFT): ``cores`` maps a
    parameter name to a bool tensor of its shape (True = core, never moves); parameters it does not
    name are free. ``tasks`` only names the run's tasks."""

    name = "frozen_cores"

    def __init__(self, *, cores: Mapping[str, torch.Tensor] | None = None, **kw):
        super().__init__(**kw)
        if not cores:
            raise ValueError("frozen_cores needs cores: a mapping parameter name -> bool tensor (True = frozen)")
        self.cores = {n: c.bool() for n, c in cores.items()}
        self._moving: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, state):
        unknown = [n for n in self.cores if n not in state.named_params]
        if unknown:
            raise KeyError(f"frozen_cores: cores name unknown parameters {unknown[:5]}")
        for n, c in self.cores.items():
            if tuple(c.shape) != tuple(state.named_params[n].shape):
                raise ValueError(f"frozen_cores: core of {n!r} has shape {tuple(c.shape)}, the parameter "
                                 f"{tuple(state.named_params[n].shape)}")
        self._moving = {n: ~c.to(state.named_params[n].device) for n, c in self.cores.items()}

    def update_mask(self, state):
        return self._moving


def policy_names() -> tuple[str, ...]:
    """Names :func:`make_policy` accepts, in registration order."""
    return tuple(REGISTRY)


def make_policy(name: str, **kw) -> IsolationPolicy:
    """Build a registered policy by name (one of :func:`policy_names`) with its keyword options."""
    if name not in REGISTRY:
        raise ValueError(f"policy must be one of {policy_names()}, got {name!r}")
    return REGISTRY[name](**kw)
