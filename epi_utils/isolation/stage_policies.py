"""Isolation policies that act at stage boundaries of a sequential schedule, and EWC.

Masks taken *after* a task's stage (arXiv 2508.21741, CPI-FT, locates a task's core region from
the task's update after fine-tuning on it; measuring it at the pretrained weights, before the task
has trained, is the wrong place for a sequential schedule). Within a stage every policy here is
full SFT; when a stage ends (``on_stage_begin`` of the next stage), each task trained in it gets a critical set of share ``isolation_ratio`` that is **pinned**
(:meth:`~epi_utils.isolation.policies.IsolationPolicy.pin`) for the rest of the run, so later stages
cannot move it:

- ``cpi_after_stage``: score = ``|sum of the task's own updates during its stage|``
  (per-task accumulated update ``sum_steps (theta_after - theta_before)`` over the steps whose
  batch belongs to the task; with one task per stage this is ``|theta_end - theta_start|``);
- ``importance_after_stage``: checkpoint importance at the end of the stage, first-order Taylor
  ``|theta * grad|`` averaged over the task's ``probe_data`` batches (study 01's importance);
- ``random_after_stage``: a seeded random set of the same share (the control that separates
  "which parameters" from "how many").

Scores are layer-normalised (``normalize``, as EPI's), so every policy ranks on the same scale.
Memory of ``cpi_after_stage``: one fp32 copy of the parameters (before the step) and one
accumulator per task of the running stage.

``ewc``: Elastic Weight Consolidation (Kirkpatrick et al. 2017), ``lambda/2 * sum_i F_i
(theta_i - theta*_i)^2`` with the diagonal Fisher ``F`` (mean squared gradient over probe batches).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from epi_utils.importance.estimators import normalize_scores
from epi_utils.isolation.policies import IsolationPolicy, batch_loss, check_probe, taylor_scores

SIGNALS = ("update", "importance", "random")


class StageEndMask(IsolationPolicy):
    """Full SFT within a stage; at its end, each of its tasks' critical set is measured and pinned."""

    name = "stage_end_mask"
    registered = False
    signal = "update"

    def __init__(self, *, probe_data: Mapping[str, Sequence[Mapping]] | None = None, normalize: str = "layer_mean",
                 seed: int = 0, **kw):
        super().__init__(**kw)
        if self.signal == "importance":
            check_probe(probe_data, self.tasks, self.name)
        self.probe_data, self.normalize, self.seed = probe_data, normalize, seed
        self.stage_of: dict[str, int] = {}
        self._acc: dict[str, list[torch.Tensor]] = {}
        self._before: list[torch.Tensor] | None = None
        self._task: str | None = None

    def _finish(self, state, tasks: Sequence[str]) -> None:
        names, params = list(state.named_params), list(state.named_params.values())
        scores = {}
        g = torch.Generator().manual_seed(self.seed)
        for t in tasks:
            if self.signal == "update":
                raw = [a.abs() for a in self._acc.pop(t)]
            elif self.signal == "importance":
                raw = taylor_scores(state.model, params, self.probe_data[t])
            else:
                raw = [torch.rand(p.shape, generator=g).to(p.device) for p in params]
            scores[t] = normalize_scores(dict(zip(names, raw)), how=self.normalize)
        self.set_critical(scores, step=state.step)
        self.pin(tasks)

    def _done_tasks(self, stage: int) -> list[str]:
        return [t for t, k in self.stage_of.items() if k < stage and t not in self.pinned]

    def on_stage_begin(self, state):
        done = self._done_tasks(state.stage)
        if done:
            self._finish(state, done)

    def update_mask(self, state):
        if state.batch_task is None:
            raise ValueError(f"{self.name}: state.batch_task is None; it needs task-homogeneous batches")
        self.stage_of.setdefault(state.batch_task, state.stage)
        if self.signal == "update":
            params = [p.detach() for p in state.named_params.values()]
            if self._before is None:
                self._before = [p.clone() for p in params]
            else:
                torch._foreach_copy_(self._before, params)
            self._task = state.batch_task
        return self.allowed_for(state.batch_task)

    @torch.no_grad()
    def on_step_end(self, state):
        if self.signal != "update" or self._task is None:
            return
        params = [p.detach() for p in state.named_params.values()]
        acc = self._acc.setdefault(self._task, [torch.zeros_like(p, dtype=torch.float32) for p in params])
        torch._foreach_add_(acc, torch._foreach_sub(params, self._before))
        self._task = None


class CPIAfterStage(StageEndMask):
    """CPI-FT's criterion after the task's stage: top share of ``|accumulated update|``."""

    name, signal = "cpi_after_stage", "update"


class ImportanceAfterStage(StageEndMask):
    """Top share of checkpoint Taylor importance on the task's probe batches after its stage."""

    name, signal = "importance_after_stage", "importance"


class RandomAfterStage(StageEndMask):
    """A random set of the same share, pinned at the end of the task's stage."""

    name, signal = "random_after_stage", "random"


class EWC(IsolationPolicy):
    """Diagonal-Fisher penalty ``lambda/2 sum F (theta - theta*)^2`` (no masks).

    ``schedule="mixed"``: ``F`` of all tasks at the start, anchored at ``theta_0``.
    ``schedule="sequential"``: no penalty in stage 0; at each later stage start the Fisher of the
    tasks trained in the previous stage is added (online EWC) and ``theta*`` = current weights.
    """

    name = "ewc"

    def __init__(self, *, probe_data: Mapping[str, Sequence[Mapping]] | None = None, ewc_lambda: float = 100.0,
                 schedule: str = "mixed", **kw):
        super().__init__(**kw)
        check_probe(probe_data, self.tasks, self.name)
        if schedule not in ("mixed", "sequential"):
            raise ValueError(f"schedule must be one of ('mixed', 'sequential'), got {schedule!r}")
        self.probe_data, self.ewc_lambda, self.schedule = probe_data, float(ewc_lambda), schedule
        self.fisher: list[torch.Tensor] | None = None
        self.anchor: list[torch.Tensor] | None = None
        self.stage_tasks: set[str] = set()

    def _fisher(self, state, tasks) -> list[torch.Tensor]:
        params = list(state.named_params.values())
        acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        batches = [b for t in tasks for b in self.probe_data[t]]
        for batch in batches:
            grads = torch.autograd.grad(batch_loss(state.model, batch), params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params)]
            torch._foreach_addcmul_(acc, grads, grads, value=1.0 / len(batches))
        return acc

    def on_train_begin(self, state):
        if self.schedule == "mixed":
            self.fisher = self._fisher(state, self.tasks)
            self.anchor = [p.detach().clone() for p in state.named_params.values()]

    def on_stage_begin(self, state):
        if self.schedule == "mixed" or state.stage == 0 or not self.stage_tasks:
            return
        new = self._fisher(state, sorted(self.stage_tasks))
        if self.fisher is None:
            self.fisher = new
        else:
            torch._foreach_add_(self.fisher, new)
        self.anchor = [p.detach().clone() for p in state.named_params.values()]
        self.stage_tasks = set()

    def on_step_end(self, state):
        if state.batch_task is not None:
            self.stage_tasks.add(state.batch_task)

    def extra_loss(self, state):
        if self.fisher is None:
            return None
        total = 0.0
        for p, f, a in zip(state.named_params.values(), self.fisher, self.anchor):
            total = total + (f * (p - a).pow(2)).sum()
        return 0.5 * self.ewc_lambda * total

    def update_mask(self, state):
        return None


