"""Data-parallel isolation check: EPI masks must be identical on every process.

Under ``DistributedDataParallel`` the gradients are all-reduced in ``backward()``, so every rank
sees the same (averaged) gradients; EPI's tracker reads them after the reduction and computes its
masks deterministically from them, so the masks agree without any extra communication. This
module verifies it: :func:`hooked_steps` is a minimal loop that follows the testbed's
``TrainHook`` contract (``extra_loss``, ``after_backward``, ``update_mask`` + bit-exact
:class:`~epi_utils.isolation_callback.MaskedStepGuard`, ``on_step_end``) around a DDP-wrapped
model; :func:`main` (run with ``torchrun --nproc_per_node 2 -m epi_utils.distributed --out f.json``)
trains a small GPT-2 on two synthetic tasks with different data on each rank and compares a
SHA-256 digest of the masks (and of the weights) across ranks after every mask update.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import types
from typing import Iterable, Mapping, Sequence

import torch

from epi_utils.isolation import MaskedStepGuard


def digest(tensors: Mapping[str, torch.Tensor] | None) -> str:
    """SHA-256 over names and raw bytes of the tensors (sorted by name); ``"none"`` for None."""
    if tensors is None:
        return "none"
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()


def hooked_steps(model, optimizer, schedule: Iterable[tuple[str, Mapping[str, torch.Tensor]]], *,
                 hooks: Sequence = (), on_mask=None) -> list[float]:
    """Minimal training loop with the ``TrainHook`` contract (one stage, no evaluation).

    ``schedule``: ``(task, batch)`` per optimizer step, batches task-homogeneous. ``on_mask(step,
    masks)`` is called after every ``update_mask``. Returns the losses.
    """
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    state = types.SimpleNamespace(model=model, optimizer=optimizer, step=0, stage=0, epoch=0.0, batch_task=None,
                                  batch=None, loss=None, named_params=named)
    guard = MaskedStepGuard()
    for h in hooks:
        h.on_train_begin(state)
        h.on_stage_begin(state)
    losses = []
    for task, batch in schedule:
        state.batch_task, state.batch = task, batch
        optimizer.zero_grad(set_to_none=True)
        loss = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}).loss
        for h in hooks:
            extra = h.extra_loss(state)
            if extra is not None:
                loss = loss + extra
        loss.backward()
        state.loss = float(loss.detach())
        for h in hooks:
            h.after_backward(state)
        masks = None
        for h in hooks:
            m = h.update_mask(state)
            if m is not None:
                masks = m if masks is None else {n: masks[n] & m[n] for n in masks}
        if on_mask is not None:
            on_mask(state.step, masks)
        guard.before_step(optimizer, named, masks)
        optimizer.step()
        guard.after_step(optimizer)
        state.step += 1
        for h in hooks:
            h.on_step_end(state)
        losses.append(state.loss)
    for h in hooks:
        h.on_train_end(state)
    return losses


def synthetic_task_batches(*, vocab: int, n_steps: int, batch_size: int, seq_len: int, tasks: Sequence[str],
                           seed: int) -> list[tuple[str, dict]]:
    """Task-homogeneous random batches: task ``k`` draws tokens from its own quarter of the
    vocabulary (so tasks have different gradients); round-robin over tasks."""
    g = torch.Generator().manual_seed(seed)
    out = []
    width = max(vocab // (len(tasks) + 1), 2)
    for s in range(n_steps):
        k = s % len(tasks)
        ids = torch.randint(k * width, (k + 1) * width, (batch_size, seq_len), generator=g)
        out.append((tasks[k], {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}))
    return out


class TinyLM(torch.nn.Module):
    """A two-layer next-token model in plain torch (fast to import and run; HF-style ``.loss``)."""

    def __init__(self, *, vocab: int = 64, dim: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, dim)
        self.h = torch.nn.ModuleList([torch.nn.Linear(dim, dim) for _ in range(2)])
        self.lm_head = torch.nn.Linear(dim, vocab)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, input_ids, attention_mask=None, labels=None):
        x = self.embed(input_ids)
        for layer in self.h:
            x = x + torch.tanh(layer(x))
        logits = self.lm_head(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 labels[:, 1:].reshape(-1))
        return types.SimpleNamespace(loss=loss, logits=logits)


def tiny_gpt2(*, vocab: int = 64, n_embd: int = 32, n_layer: int = 2, seed: int = 0):
    """A small random GPT-2 (no dropout) for checks that need no pretrained weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=n_embd, n_layer=n_layer, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def main(argv: Sequence[str] | None = None) -> dict:
    """torchrun entry point: DDP (gloo) + EPI, compare mask and weight digests across ranks."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from epi_utils.isolation import make_policy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--interval", type=int, default=4)
    ap.add_argument("--out", type=str, default="")
    args = ap.parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = DDP(TinyLM(seed=0))  # same init on every rank (DDP also broadcasts rank 0's weights)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tasks = ["a", "b"]
    policy = make_policy("epi", tasks=tasks, isolation_ratio=0.1, mask_update_interval=args.interval,
                         warmup_steps=args.interval)
    schedule = synthetic_task_batches(vocab=64, n_steps=args.steps, batch_size=4, seq_len=12, tasks=tasks,
                                      seed=100 + rank)  # different data on each rank
    checks = []

    def on_mask(step, masks):
        if masks is None or policy._last_update_step != step:
            return
        mine = [digest(masks), digest({n: p.detach() for n, p in model.named_parameters()})]
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        checks.append({"step": step, "masks_equal": all(e[0] == mine[0] for e in everyone),
                       "weights_equal": all(e[1] == mine[1] for e in everyone),
                       "protected": sum(int((~m).sum()) for m in masks.values())})

    hooked_steps(model, opt, schedule, hooks=[policy], on_mask=on_mask)
    result = {"world_size": world, "n_checks": len(checks), "checks": checks,
              "all_equal": all(c["masks_equal"] and c["weights_equal"] for c in checks) and bool(checks)}
    if rank == 0 and args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    dist.barrier()
    dist.destroy_process_group()
    return result


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
