"""The one hook-calling sequence of a training step, shared by every training route.

The SFT engine (:func:`epi_utils.lm.train.train_sft`), the minimal loop used under DDP
(:func:`epi_utils.isolation.distributed.hooked_steps`) and the ``transformers.Trainer`` route
(:class:`epi_utils.isolation.callback.IsolationCallback`) all call the hooks
(:class:`epi_utils.lm.train.TrainHook`: isolation policies, EWC, ...) through the functions below, so a
policy behaves the same whichever route trains the model:

- :func:`begin_training` once (``on_train_begin``), :func:`begin_stage` at each stage start
  (``on_stage_begin``; a ``Trainer.train()`` call is one stage),
- per optimizer step, after the data loss's backward: :func:`after_backward` = the hooks'
  ``extra_loss`` (its gradient added to ``.grad`` through ``torch.autograd.grad``, so DDP's gradient
  hooks never fire for it: the penalty is the same on every rank), ``after_backward``, then the AND
  of the hooks' ``update_mask`` (name -> bool, True = may move),
- :func:`end_step` (``on_step_end``) after the optimizer step, :func:`end_training` (``on_train_end``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch


def begin_training(hooks: Sequence, state: Any) -> None:
    for h in hooks:
        h.on_train_begin(state)


def begin_stage(hooks: Sequence, state: Any) -> None:
    for h in hooks:
        h.on_stage_begin(state)


def add_extra_loss(hooks: Sequence, state: Any, named: Mapping[str, torch.Tensor]) -> float:
    """Sum the hooks' ``extra_loss`` terms and add their gradient to ``p.grad`` of ``named``
    (``torch.autograd.grad``, then in-place add). Returns the extra loss's value (0.0 if none)."""
    extras = [e for e in (h.extra_loss(state) for h in hooks) if e is not None]
    if not extras:
        return 0.0
    extra = torch.stack([e.reshape(()) for e in extras]).sum()
    params = [p for p in named.values() if p.requires_grad]
    if extra.requires_grad:
        grads = torch.autograd.grad(extra, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is None:
                    continue
                if p.grad is None:
                    p.grad = g.detach().clone()
                else:
                    p.grad.add_(g)
    return float(extra.detach())


def combined_mask(hooks: Sequence, state: Any, named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """AND of the hooks' ``update_mask`` (name -> bool tensor on the parameter's device), ``None``
    when no hook masks; a name that is not a trainable parameter raises ``KeyError``. When one hook
    masks and its mapping carries its frozen positions (``frozen_positions()``, a compact isolation
    policy's ``StepMasks``), that mapping is returned as it is (no bool masks are built)."""
    masks: dict[str, torch.Tensor] | None = None
    given = [(h, m) for h, m in ((h, h.update_mask(state)) for h in hooks) if m is not None]
    if len(given) == 1 and callable(getattr(given[0][1], "frozen_positions", None)):
        h, got = given[0]  # one hook's masks that carry their frozen positions: passed on as they are
        unknown = [name for name in got if name not in named]
        if unknown:
            raise KeyError(f"update_mask of {type(h).__name__} names unknown parameter {unknown[0]!r}")
        return got
    for h, got in given:
        masks = {} if masks is None else masks
        for name, m in got.items():
            if name not in named:
                raise KeyError(f"update_mask of {type(h).__name__} names unknown parameter {name!r}")
            m = m.to(device=named[name].device, dtype=torch.bool)
            masks[name] = masks[name] & m if name in masks else m
    return masks


def after_backward(hooks: Sequence, state: Any, named: Mapping[str, torch.Tensor], *, loss: float | None = None
                   ) -> tuple[float, dict[str, torch.Tensor] | None]:
    """The step's hook sequence once the data loss's gradients are in ``.grad``: extra losses,
    ``state.loss = loss + extra`` (when the route knows ``loss``), ``after_backward``, masks.
    Returns ``(extra loss value, masks or None)``."""
    extra = add_extra_loss(hooks, state, named)
    if loss is not None:
        state.loss = loss + extra
    for h in hooks:
        h.after_backward(state)
    return extra, combined_mask(hooks, state, named)


def end_step(hooks: Sequence, state: Any) -> None:
    for h in hooks:
        h.on_step_end(state)


def end_training(hooks: Sequence, state: Any) -> None:
    for h in hooks:
        h.on_train_end(state)
