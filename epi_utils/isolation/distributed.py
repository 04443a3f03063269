"""Data-parallel isolation check: EPI masks must be identical on every process.

Under ``DistributedDataParallel`` the gradients are all-reduced in ``backward()``, so every rank
sees the same (averaged) gradients; EPI's tracker reads them after the reduction and computes its
masks deterministically from them, so the masks agree without any extra communication. This
module verifies it on an existing engine: :func:`main` (run with ``torchrun --nproc_per_node 2 -m
epi_utils.isolation.distributed --out f.json``) trains with ``transformers.Trainer`` and the
:class:`~epi_utils.isolation.callback.IsolationCallback` (:func:`trainer_check`; the Trainer wraps
the model in DDP through accelerate and gives each process different batches of the same task) and
compares a SHA-256 digest of the masks, of the weights and the step's task across ranks after
every mask update. ``--engine loop`` runs the same check with :func:`hooked_steps`, a minimal loop
with the testbed's ``TrainHook`` contract around a ``DistributedDataParallel`` model; ``--engine
trainer loop`` runs both in one launch (one process start and one set of imports; ``--out`` then
holds ``{engine: result}``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import types
from typing import Iterable, Mapping, Sequence

import torch

from epi_utils.isolation.policies import MaskedStepGuard
from epi_utils.lm import hooks as step_hooks
from epi_utils.lm.train import TrainHook


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
    """Minimal training loop with the ``TrainHook`` contract (no evaluation), calling the hooks
    through the shared sequence of :mod:`epi_utils.lm.hooks`.

    ``schedule``: ``(task, batch)`` or ``(task, batch, stage)`` per optimizer step, batches
    task-homogeneous; a new ``stage`` number calls ``on_stage_begin`` (the optimizer carries over).
    ``on_mask(step, masks)`` is called after every ``update_mask``. Returns the losses.
    """
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    state = types.SimpleNamespace(model=model, optimizer=optimizer, step=0, stage=0, epoch=0.0, batch_task=None,
                                  batch=None, loss=None, named_params=named)
    guard = MaskedStepGuard()
    step_hooks.begin_training(hooks, state)
    step_hooks.begin_stage(hooks, state)
    losses = []
    for item in schedule:
        task, batch = item[0], item[1]
        if len(item) > 2 and item[2] != state.stage:
            state.stage = item[2]
            step_hooks.begin_stage(hooks, state)
        state.batch_task, state.batch = task, batch
        optimizer.zero_grad(set_to_none=True)
        loss = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}).loss
        loss.backward()
        _, masks = step_hooks.after_backward(hooks, state, named, loss=float(loss.detach()))
        if on_mask is not None:
            on_mask(state.step, masks)
        guard.before_step(optimizer, named, masks)
        optimizer.step()
        guard.after_step(optimizer)
        state.step += 1
        step_hooks.end_step(hooks, state)
        losses.append(state.loss)
    step_hooks.end_training(hooks, state)
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


def _compare_across_ranks(step: int, task, masks, model, world: int) -> dict:
    """all_gather the digests of ``masks``, the weights and the step's task; compare them."""
    import torch.distributed as dist

    mine = [digest(masks), digest({n: p.detach() for n, p in model.named_parameters()}), task]
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    return {"step": step, "masks_equal": all(e[0] == mine[0] for e in everyone),
            "weights_equal": all(e[1] == mine[1] for e in everyone),
            "task_equal": all(e[2] == mine[2] for e in everyone), "task": task,
            "protected": sum(int((~m).sum()) for m in masks.values())}


def trainer_check(*, steps: int, interval: int, world: int, batch_size: int = 4,
                  seq_len: int = 12) -> tuple[list[dict], dict]:
    """EPI inside ``transformers.Trainer`` launched by ``torchrun``: the Trainer (through
    accelerate) wraps the model in ``DistributedDataParallel`` (gloo on CPU) and deals the batches
    of one shared, task-homogeneously ordered dataset round-robin to the processes, so every rank
    trains on different examples of the same task at each step. After every mask refresh the masks,
    the weights and the step's task are compared across ranks (:func:`_compare_across_ranks`).
    Returns the checks and a summary over all steps: whether every step had one task on all ranks,
    and the share of steps at which the ranks' batches differed (equal weights then show that the
    gradients were synchronised, not merely computed on identical data)."""
    import tempfile

    import torch.distributed as dist
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from epi_utils.isolation.callback import (
        IsolationCallback,
        TaskRecordingCollator,
        sequential_trainer_class,
        task_homogeneous_order,
    )
    from epi_utils.isolation.policies import make_policy

    tasks = ["a", "b"]
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "task": []}
    for task, batch in synthetic_task_batches(vocab=64, n_steps=2 * steps * world, batch_size=batch_size,
                                              seq_len=seq_len, tasks=tasks, seed=0):
        for ids in batch["input_ids"].tolist():
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * seq_len)
            rows["labels"].append(ids)
            rows["task"].append(task)
    order = task_homogeneous_order(rows["task"], batch_size=batch_size, world_size=world, seed=0)
    ds = Dataset.from_dict(rows).select(order)
    policy = make_policy("epi", tasks=tasks, isolation_ratio=0.1, mask_update_interval=interval,
                         warmup_steps=interval)
    seen: list[tuple[str, str]] = []  # (task, digest of input_ids) of every batch this process collated

    def recording_collator(features):
        batch = default_data_collator(features)
        seen.append((collator.queue[-1], digest({"input_ids": batch["input_ids"]})))
        return batch

    collator = TaskRecordingCollator(recording_collator)
    iso = IsolationCallback(policy, collator)
    checks: list[dict] = []

    class CompareAfterRefresh(TrainerCallback):  # runs after IsolationCallback (registered later)
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if policy._last_update_step == iso.state.step:
                masks = policy.update_mask(iso.state)  # the masks of this step (no second refresh)
                checks.append(_compare_across_ranks(iso.state.step, iso.state.batch_task, masks, model, world))

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size,
                                 learning_rate=1e-2, weight_decay=0.1, report_to=[], save_strategy="no",
                                 logging_strategy="no", use_cpu=True, ddp_backend="gloo",
                                 remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)
        trainer = sequential_trainer_class(Trainer)(model=tiny_gpt2(seed=0), args=args, train_dataset=ds,
                                                    data_collator=collator, callbacks=[iso, CompareAfterRefresh()])
        trainer.train()
    everyone = [None] * world
    dist.all_gather_object(everyone, seen[:steps])
    per_step = list(zip(*everyone))
    summary = {"steps": len(per_step),
               "same_task_every_step": all(len({t for t, _ in step}) == 1 for step in per_step),
               "different_batches_share": sum(len({d for _, d in step}) == world for step in per_step)
               / max(len(per_step), 1)}
    return checks, summary


def main(argv: Sequence[str] | None = None) -> dict:
    """torchrun entry point: DDP (gloo) + EPI, compare mask and weight digests across ranks.

    Returns the result of the one engine asked for, or ``{engine: result}`` for several (in the
    order given, in one process group)."""
    import torch.distributed as dist

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--interval", type=int, default=4)
    ap.add_argument("--engine", choices=("trainer", "loop"), nargs="+", default=["trainer"],
                    help="trainer: transformers.Trainer + IsolationCallback (accelerate DDP); "
                         "loop: the minimal hooked_steps loop around a DDP-wrapped model; several: each in turn")
    ap.add_argument("--out", type=str, default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for engine in args.engine:
        if engine == "trainer":
            checks, summary = trainer_check(steps=args.steps, interval=args.interval,
                                            world=int(os.environ.get("WORLD_SIZE", 1)))
            results[engine] = _result(checks, world=dist.get_world_size(), engine="trainer", **summary)
        else:
            results[engine] = loop_check(steps=args.steps, interval=args.interval)
    result = results[args.engine[0]] if len(results) == 1 else results
    if dist.get_rank() == 0 and args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    dist.barrier()
    dist.destroy_process_group()
    return result


def loop_check(*, steps: int, interval: int) -> dict:
    """EPI in :func:`hooked_steps` around a ``DistributedDataParallel`` :class:`TinyLM`, different
    data on each rank; masks, weights and task compared across ranks after every mask refresh.
    Joins the process group of an engine that ran before, else starts one (gloo)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from epi_utils.isolation.policies import make_policy

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DDP(TinyLM(seed=0))  # same init on every rank (DDP also broadcasts rank 0's weights)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tasks = ["a", "b"]
    policy = make_policy("epi", tasks=tasks, isolation_ratio=0.1, mask_update_interval=interval,
                         warmup_steps=interval)
    schedule = synthetic_task_batches(vocab=64, n_steps=steps, batch_size=4, seq_len=12, tasks=tasks,
                                      seed=100 + rank)  # different data on each rank
    checks = []

    def on_mask(step, masks):
        if masks is not None and policy._last_update_step == step:
            checks.append(_compare_across_ranks(step, policy.last_task, masks, model.module, world))

    policy.last_task = None
    hooked_steps(model, opt, schedule, hooks=[_TaskNote(policy), policy], on_mask=on_mask)
    return _result(checks, world=world, engine="loop")


class _TaskNote(TrainHook):
    """Hook that notes the step's task on ``policy.last_task`` (for the loop engine's checks)."""

    def __init__(self, policy):
        self.policy = policy

    def after_backward(self, state):
        self.policy.last_task = state.batch_task


def _result(checks: list[dict], *, world: int, engine: str, **extra) -> dict:
    """One engine's result: its checks, ``all_equal`` over them, and ``extra`` (the trainer's summary)."""
    return {"engine": engine, "world_size": world, "n_checks": len(checks), "checks": checks, **extra,
            "all_equal": bool(checks) and all(c["masks_equal"] and c["weights_equal"] and c["task_equal"]
                                              for c in checks)}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
