"""Apply isolation policies outside the testbed engine: exact masked optimizer steps and a
``transformers.TrainerCallback`` (works in ``Trainer`` and TRL's ``SFTTrainer``).

:class:`~epi_utils.isolation.policies.MaskedStepGuard` (re-exported here) makes ANY optimizer respect a mask bit-exactly: before ``step()`` it
zeroes the gradient of masked (False) elements and saves their values and their optimizer state
(every state tensor of the parameter's shape: AdamW's ``exp_avg``, ``exp_avg_sq``; state created
by this step starts at 0 there); after ``step()`` it writes them back. Decoupled weight decay,
momentum and Adam's bias correction therefore cannot move a masked element. Cost: a gather and
a scatter of the masked elements per step.

:class:`IsolationCallback` drives any :class:`epi_utils.isolation.policies.IsolationPolicy` from a
``Trainer`` through the same hook sequence as the SFT engine and the DDP loop
(:mod:`epi_utils.lm.hooks`): ``on_train_begin`` -> ``policy.on_train_begin`` (first ``train()``
only) and ``policy.on_stage_begin`` (every ``train()`` call is one stage: ``state.stage`` counts
them, and ``state.step`` counts optimizer steps over all of them, as in the engine);
``on_pre_optimizer_step`` (gradients are complete and, under DDP, all-reduced) -> the
policy's ``extra_loss`` (e.g. EWC's penalty, its gradient added to ``.grad``), ``after_backward``,
``update_mask`` and the guard; ``on_optimizer_step`` -> restore; ``on_step_end``. Note: the Trainer
clips gradients before ``on_pre_optimizer_step``, so with ``max_grad_norm > 0`` an extra loss's
gradient is added after clipping (the engine clips after it). The task of each step comes from
:class:`TaskRecordingCollator`, which wraps the data collator, pops the ``task`` column of every
batch into a FIFO queue and requires each batch to hold one task; the callback pops
``gradient_accumulation_steps`` entries per optimizer step (robust to the one-batch look-ahead of
accelerate's data loader). Build task-homogeneous batches with :func:`task_homogeneous_order`
and keep the order with ``Trainer``'s sequential sampler (see :func:`sequential_trainer_class`).

Example (README)::

    policy = make_policy("epi", tasks=tasks, isolation_ratio=0.05, mask_update_interval=20)
    collator = TaskRecordingCollator(DataCollatorForLanguageModeling(tok, mlm=False))
    trainer = sequential_trainer_class(Trainer)(model=model, args=args, train_dataset=ds,
                                                data_collator=collator,
                                                callbacks=[IsolationCallback(policy, collator)])
    trainer.train()
"""
from __future__ import annotations

import collections
import types
from typing import Sequence

import numpy as np
import torch

from epi_utils.isolation.policies import MaskedStepGuard  # noqa: F401  (re-exported)
from epi_utils.lm import hooks as step_hooks

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - transformers is a pinned requirement
    TrainerCallback = object


def task_homogeneous_order(tasks: Sequence[str], *, batch_size: int, seed: int = 0,
                           drop_last: bool = True, world_size: int = 1) -> list[int]:
    """Example indices ordered so that every consecutive ``batch_size * world_size`` chunk holds
    one task.

    ``tasks``: the task of each example. Batches are shuffled across tasks with ``seed``
    (``numpy.random.default_rng``); incomplete last batches of a task are dropped with ``drop_last``.
    ``world_size``: data-parallel processes. ``Trainer`` (through accelerate) deals consecutive
    per-device batches round-robin to the processes, so chunks of ``world_size`` batches give every
    process a batch of the SAME task at each optimizer step, as the masks require (the all-reduced
    gradient of a step must belong to one task).
    """
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be >= 1, got {batch_size}, {world_size}")
    batch_size = batch_size * world_size
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[int]] = collections.defaultdict(list)
    for i, t in enumerate(tasks):
        by_task[t].append(i)
    batches = []
    for t in sorted(by_task):
        idx = rng.permutation(by_task[t]).tolist()
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            if len(chunk) == batch_size or not drop_last:
                batches.append(chunk)
    if not drop_last and any(len(b) != batch_size for b in batches[:-1]):
        raise ValueError("drop_last=False leaves incomplete batches inside the order; use drop_last=True")
    return [i for b in (batches[j] for j in rng.permutation(len(batches))) for i in b]


class TaskRecordingCollator:
    """Wraps a data collator: removes the ``task`` field of each feature, checks the batch is
    task-homogeneous and appends its task to ``self.queue``."""

    def __init__(self, collator, *, task_key: str = "task"):
        self.collator, self.task_key = collator, task_key
        self.queue: collections.deque[str] = collections.deque()

    def __call__(self, features):
        tasks = {f[self.task_key] for f in features}
        if len(tasks) != 1:
            raise ValueError(f"batch mixes tasks {sorted(tasks)}: order the data with task_homogeneous_order "
                             "and a sequential sampler")
        self.queue.append(tasks.pop())
        return self.collator([{k: v for k, v in f.items() if k != self.task_key} for f in features])


def sequential_trainer_class(base):
    """A subclass of ``base`` (``Trainer``/``SFTTrainer``) that keeps the dataset order (no shuffle)."""

    class SequentialOrderTrainer(base):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    SequentialOrderTrainer.__name__ = f"Sequential{base.__name__}"
    return SequentialOrderTrainer


class IsolationCallback(TrainerCallback):
    """Runs an isolation policy (a ``TrainHook``) inside ``transformers.Trainer``; see module doc."""

    def __init__(self, policy, collator: TaskRecordingCollator | None = None, *, task_fn=None):
        if collator is None and task_fn is None:
            raise ValueError("IsolationCallback needs a TaskRecordingCollator or task_fn(step) -> task")
        self.policy, self.collator, self.task_fn = policy, collator, task_fn
        self.guard = MaskedStepGuard()
        self.state = types.SimpleNamespace(model=None, optimizer=None, step=0, stage=0, epoch=0.0, batch_task=None,
                                           batch=None, loss=None, named_params={})
        self.frozen_counts: list[int] = []
        self._trains = 0
        self._offset = 0  # optimizer steps of earlier train() calls: state.step is global over stages

    def _sync(self, hf_state, kwargs):
        model = kwargs.get("model")
        self.state.model = model
        self.state.optimizer = kwargs.get("optimizer")
        self.state.step = self._offset + hf_state.global_step
        self.state.epoch = hf_state.epoch or 0.0
        if not self.state.named_params and model is not None:
            self.state.named_params = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(self, args, state, control, **kwargs):
        self._sync(state, kwargs)
        self.state.stage = self._trains
        if self._trains == 0:
            step_hooks.begin_training([self.policy], self.state)
        step_hooks.begin_stage([self.policy], self.state)
        self._trains += 1

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._sync(state, kwargs)
        if self.task_fn is not None:
            self.state.batch_task = self.task_fn(state.global_step)
        else:
            tasks = [self.collator.queue.popleft() for _ in range(args.gradient_accumulation_steps)
                     if self.collator.queue]
            if len(set(tasks)) > 1:
                raise ValueError(f"one optimizer step mixed tasks {tasks}")
            self.state.batch_task = tasks[0] if tasks else None
        _, masks = step_hooks.after_backward([self.policy], self.state, self.state.named_params)
        self.frozen_counts.append(self.guard.before_step(kwargs["optimizer"], self.state.named_params, masks))

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.guard.after_step(kwargs["optimizer"])

    def on_step_end(self, args, state, control, **kwargs):
        self._sync(state, kwargs)
        step_hooks.end_step([self.policy], self.state)

    def on_train_end(self, args, state, control, **kwargs):
        self._sync(state, kwargs)
        self._offset = self.state.step
        step_hooks.end_training([self.policy], self.state)
