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

The framework (:class:`IsolationPolicy`, the registry, :class:`MaskedStepGuard`, the probe
helpers) lives in :mod:`epi_utils.isolation.base` and is re-exported here.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from epi_utils.importance.estimators import ImportanceTracker, normalize_scores
from epi_utils.isolation.base import (  # noqa: F401  (re-exported: the framework lives in base)
    MODEL_KEYS,
    OVERLAPS,
    REGISTRY,
    IsolationPolicy,
    MaskedStepGuard,
    batch_loss,
    check_probe,
    taylor_scores,
)
from epi_utils.isolation.state import measured_bytes_per_param

FINISHED = ("ema", "replay", "frozen")


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
