"""The SFT engine: response-only loss, masked AdamW, schedules, hooks, dynamics, checkpoints.

``train_sft(model, tokenizer, stages, *, config, hooks, dynamics_path, dynamics_samples, eval_samples)`` trains on a
list of stages (one stage = mixed multi-task SFT; several = a sequential schedule, stage k after
stage k-1; the optimizer and its moments carry over, the learning-rate schedule restarts per stage).

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` samples; with
``task_homogeneous_batches`` all samples of a step come from one task (``TrainState.batch_task``).
Within a step: forward/backward of the micro-batches (loss = mean NLL of response tokens + EOS),
then the shared hook sequence of :mod:`epi_utils.lm.hooks` (``extra_loss`` of the hooks, its gradient
added once per step; ``after_backward``; the AND of the hooks' ``update_mask``: masked gradient
entries are zeroed), gradient clipping, the
masked AdamW step (:mod:`epi_utils.lm.masked_adamw`: masked elements, their moments and their
weight decay stay bit-identical), ``on_step_end``.

Evaluation points: before the first step (step 0; not with ``eval_at_start=False``), every ``eval_every``
optimizer steps and at the end of each stage. At each point every training sample of every stage (or
only the ``dynamics_samples``, e.g. the SFT rows of a knowledge mix; the greedy budget stays the one of
all training samples, so their records are the same) gets one JSONL line in
``dynamics_path`` with the fields ``sample_id, task, stage, train_stage, step, epoch, loss,
mean_token_prob, exact_match`` (``loss``/``mean_token_prob`` teacher-forced over the response
tokens, ``exact_match`` greedy 0/1; ``epoch`` counts epochs of the stage being trained).

Checkpoints: with ``checkpoint_dir`` and ``checkpoint_every > 0`` the engine saves the model,
optimizer, RNG states, history and stage-end evaluations every ``checkpoint_every`` steps and at
each stage end (``<checkpoint_dir>/last.pt``, atomically). With ``resume=True`` a rerun continues
from it and ends in the same state as an uninterrupted run (batch order is a pure function of
``(seed, stage, epoch)``); dynamics lines written after the checkpoint are dropped. Hook state is
not checkpointed. Deterministic for ``config.seed`` on CPU.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from epi_utils.lm import hooks as step_hooks
from epi_utils.lm.evaluate import _max_new, exact_match, response_stats, task_accuracy
from epi_utils.lm.masked_adamw import MaskedAdamW
from epi_utils.lm.sft_format import encode_example, format_example, pad_batch, pad_id  # noqa: F401  (re-exported)

SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class TrainConfig:
    """SFT settings (validated by :meth:`validate`, called by :func:`train_sft`)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 16
    grad_accum: int = 1
    epochs: float = 3.0                    # per stage
    max_steps: int | None = None           # optimizer steps per stage; overrides epochs
    warmup_ratio: float = 0.05
    schedule: str = "linear"               # linear | cosine | constant (after warmup; restarts per stage)
    max_grad_norm: float | None = 1.0
    eval_every: int = 50                   # steps between evaluation points; 0 = stage ends only
    eval_train: bool = True                # per-sample dynamics on all training samples at evaluation points
    eval_at_start: bool = True             # an evaluation point before the first step (a resumed run takes none)
    task_homogeneous_batches: bool = True
    seed: int = 0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    resume: bool = True
    max_new_tokens: int | None = None      # greedy budget; None = longest reference response + 2
    eval_batch_size: int = 64

    def validate(self) -> None:
        def bad(name, allowed):
            raise ValueError(f"TrainConfig.{name} must be {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "grad_accum"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "a positive integer")
        for name in ("eval_every", "checkpoint_every", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "a non-negative integer")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {SCHEDULES}")
        if not (self.lr >= 0):
            bad("lr", ">= 0")
        if not (0 <= self.warmup_ratio <= 1):
            bad("warmup_ratio", "in [0, 1]")
        if self.max_steps is None and not (self.epochs > 0):
            bad("epochs", "> 0 (or set max_steps)")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            bad("max_steps", "None or a positive integer")


class TrainHook:
    """Extension points of :func:`train_sft`; every method defaults to a no-op."""

    def on_train_begin(self, state: "TrainState") -> None: ...
    def on_stage_begin(self, state: "TrainState") -> None: ...
    def extra_loss(self, state: "TrainState") -> torch.Tensor | None: return None
    def after_backward(self, state: "TrainState") -> None: ...
    def update_mask(self, state: "TrainState") -> dict[str, torch.Tensor] | None: return None
    def on_step_end(self, state: "TrainState") -> None: ...
    def on_evaluate(self, state: "TrainState", records: list[dict]) -> None: ...
    def on_train_end(self, state: "TrainState") -> None: ...


@dataclass
class TrainState:
    """What hooks see. ``step`` = optimizer steps done (global over stages)."""

    model: Any
    optimizer: MaskedAdamW
    tokenizer: Any
    config: TrainConfig
    named_params: dict[str, torch.nn.Parameter]
    step: int = 0
    stage: int = 0
    epoch: float = 0.0
    stage_step: int = 0                    # steps done in the current stage
    stage_steps: int = 0                   # steps the current stage will take
    total_steps: int = 0                   # steps of all stages
    batch_task: str | None = None
    batch: dict = field(default_factory=dict)
    loss: float = float("nan")
    lr: float = 0.0
    #: a hook sets this (as the HF Trainer's ``control.should_training_stop``) to end training after
    #: the current step: the loop finishes that step's evaluation and checkpoint, then stops, and
    #: ``on_train_end`` still runs for every hook.
    should_stop: bool = False


@dataclass
class TrainResult:
    steps: int
    history: list[dict]                    # per step: step, stage, loss, lr, task
    stage_end_eval: list[dict[str, float]]  # per stage: {task: accuracy on eval_samples}
    dynamics_path: Path | None
    seconds: float = 0.0
    final_train_exact: dict[str, bool] = field(default_factory=dict)  # sample_id -> exact match at the end
    stopped_early: bool = False            # a hook set ``TrainState.should_stop``


# ----------------------------------------------------------------------------- batching
def _stage_plan(samples: Sequence, config: TrainConfig, stage: int) -> tuple[list[list[list[int]]], int]:
    """Steps of one stage (each a list of micro-batches of sample indices) and steps per epoch."""
    per_step = config.batch_size * config.grad_accum

    def epoch_steps(epoch: int) -> list[list[list[int]]]:
        rng = np.random.default_rng([config.seed, stage, epoch])
        if config.task_homogeneous_batches:
            by_task: dict[str, list[int]] = {}
            for i, s in enumerate(samples):
                by_task.setdefault(s.task, []).append(i)
            steps = []
            for t in sorted(by_task):
                idx = [by_task[t][j] for j in rng.permutation(len(by_task[t]))]
                steps += [idx[k:k + per_step] for k in range(0, len(idx), per_step)]
            steps = [steps[j] for j in rng.permutation(len(steps))]
        else:
            idx = [int(j) for j in rng.permutation(len(samples))]
            steps = [idx[k:k + per_step] for k in range(0, len(idx), per_step)]
        return [[st[k:k + config.batch_size] for k in range(0, len(st), config.batch_size)] for st in steps]

    first = epoch_steps(0)
    per_epoch = len(first)
    n = config.max_steps if config.max_steps is not None else max(1, math.ceil(config.epochs * per_epoch))
    plan, epoch = list(first), 0
    while len(plan) < n:
        epoch += 1
        plan += epoch_steps(epoch)
    return plan[:n], per_epoch


def _collate(tokenizer, samples: Sequence, device) -> dict:
    batch = pad_batch([encode_example(tokenizer, s.prompt, s.response) for s in samples],
                      pad_token_id=pad_id(tokenizer))
    return {**{k: v.to(device) for k, v in batch.items()}, "sample_ids": [s.id for s in samples]}


def _lr_factor(config: TrainConfig, k: int, n: int) -> float:
    """Multiplier of ``lr`` for the ``k``-th (0-based) step of a stage of ``n`` steps."""
    warm = math.ceil(config.warmup_ratio * n)
    if k < warm:
        return (k + 1) / warm
    if config.schedule == "constant":
        return 1.0
    frac = (k - warm) / max(1, n - warm)
    return max(0.0, 1.0 - frac) if config.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))


# ----------------------------------------------------------------------------- checkpoints
def _save_ckpt(path: Path, payload: dict) -> None:
    """Save ``{"model", "optimizer", "rng", ...}``: tensors as tensors; everything else (step,
    history, evaluations, NumPy/Python RNG states) as JSON bytes in a ``uint8`` tensor under
    ``"meta_json"``, so that :func:`_load_ckpt` can load with ``weights_only=True`` (no pickled
    objects are ever executed) and the checkpoint stays one atomically replaced file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = payload["rng"]
    meta = {k: v for k, v in payload.items() if k not in ("model", "optimizer", "rng")}
    np_state = rng["numpy"]
    meta["rng"] = {"numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
                   "python": [rng["python"][0], list(rng["python"][1]), rng["python"][2]]}
    blob = torch.frombuffer(bytearray(json.dumps(meta).encode("utf-8")), dtype=torch.uint8)
    tensors = {"model": payload["model"], "optimizer": payload["optimizer"], "rng_torch": rng["torch"], "meta_json": blob}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(tensors, tmp)
    os.replace(tmp, path)


def _load_ckpt(path: Path, device) -> dict:
    """Inverse of :func:`_save_ckpt`, loaded with ``torch.load(weights_only=True)``."""
    try:
        raw = torch.load(path, weights_only=True, map_location=device)
        meta = json.loads(bytes(raw["meta_json"].cpu().tolist()).decode("utf-8"))
    except (KeyError, ValueError, RuntimeError, OSError, pickle.UnpicklingError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [""]
        reason = next((ln for ln in lines if "WeightsUnpickler" in ln), lines[0])[:300]
        raise ValueError(f"checkpoint {path} cannot be resumed ({type(exc).__name__}: {reason}); it holds more than "
                         "tensors and JSON (loaded with weights_only=True), was written by "
                         "an older version or is damaged: delete it to start over") from None
    np_state = meta["rng"]["numpy"]
    py_state = meta["rng"]["python"]
    meta["rng"] = {"torch": raw["rng_torch"].cpu(),
                   "numpy": (np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]),
                   "python": (py_state[0], tuple(py_state[1]), py_state[2])}
    return {**meta, "model": raw["model"], "optimizer": raw["optimizer"]}


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_states(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])


def _truncate_dynamics(path: Path, max_step: int) -> None:
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= max_step]
    path.write_text("".join(ln + "\n" for ln in keep))


# ----------------------------------------------------------------------------- the loop
def train_sft(model, tokenizer, stages: Sequence[Sequence], *, config: TrainConfig, hooks: Sequence[TrainHook] = (),
              dynamics_path: Path | None = None, dynamics_samples: Sequence | None = None,
              eval_samples: Sequence | None = None, progress: bool = True) -> TrainResult:
    """Supervised fine-tuning over ``stages`` (list of lists of :class:`~epi_utils.data.world.Sample`).
    ``dynamics_samples``: the training samples evaluated at each evaluation point (default: all of them);
    ``eval_samples``: held-out samples whose per-task accuracy is taken at each stage end."""
    from tqdm.auto import tqdm

    config.validate()
    if isinstance(stages, (str, bytes)) or not stages or any(len(s) == 0 for s in stages):
        raise ValueError("stages must be a non-empty list of non-empty lists of samples")
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token; the SFT format needs one")
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = MaskedAdamW(named, lr=config.lr, betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay)
    plans = [_stage_plan(st, config, k) for k, st in enumerate(stages)]
    total = sum(len(p[0]) for p in plans)
    state = TrainState(model=model, optimizer=opt, tokenizer=tokenizer, config=config, named_params=named,
                       total_steps=total)
    all_train = [s for st in stages for s in st]
    k_of = {s.id: k for k, st in enumerate(stages) for s in st}
    evaluated = all_train if dynamics_samples is None else list(dynamics_samples)
    unknown = [s.id for s in evaluated if s.id not in k_of]
    if unknown:
        raise ValueError(f"dynamics_samples holds {len(unknown)} sample(s) that are not training samples, "
                         f"e.g. {unknown[0]!r}")
    # the greedy budget of every evaluation point: over all training samples, whichever are evaluated
    max_new = _max_new(tokenizer, all_train, config.max_new_tokens) if config.eval_train else None
    history: list[dict] = []
    stage_end_eval: list[dict[str, float]] = []
    last_eval: dict[str, bool] = {}
    done_step = 0
    ckpt = Path(config.checkpoint_dir) / "last.pt" if config.checkpoint_dir else None
    dyn = Path(dynamics_path) if dynamics_path is not None else None
    if ckpt is not None and config.resume and ckpt.exists():
        payload = _load_ckpt(ckpt, device)
        model.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        _set_rng_states(payload["rng"])
        done_step, history, stage_end_eval = payload["step"], payload["history"], payload["stage_end_eval"]
        last_eval = payload.get("last_eval", {})
        if dyn is not None:
            _truncate_dynamics(dyn, done_step)
    elif dyn is not None:
        dyn.parent.mkdir(parents=True, exist_ok=True)
        dyn.write_text("")

    def evaluate(stage_idx: int, epoch: float) -> None:
        nonlocal last_eval
        if not config.eval_train:
            return
        model.eval()
        stats = response_stats(model, tokenizer, evaluated, batch_size=config.eval_batch_size)
        em = exact_match(model, tokenizer, evaluated, max_new_tokens=max_new, batch_size=config.eval_batch_size)
        recs = [{"sample_id": s.id, "task": s.task, "stage": k_of[s.id], "train_stage": stage_idx, "step": state.step,
                 "epoch": round(epoch, 6), "loss": st["loss"], "mean_token_prob": st["mean_token_prob"],
                 "exact_match": int(c)} for s, st, c in zip(evaluated, stats, em)]
        last_eval = {r["sample_id"]: bool(r["exact_match"]) for r in recs}
        if dyn is not None:
            with dyn.open("a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in recs)
        for h in hooks:
            h.on_evaluate(state, recs)
        model.train()

    step_hooks.begin_training(hooks, state)
    state.step = done_step
    if done_step == 0 and config.eval_at_start:
        evaluate(0, 0.0)
    model.train()
    bar = tqdm(total=total, initial=done_step, desc="sft", disable=not progress)
    g0 = 0
    for k, (plan, per_epoch) in enumerate(plans):
        n_k = len(plan)
        if g0 + n_k <= done_step:
            g0 += n_k
            continue
        state.stage, state.stage_steps = k, n_k
        step_hooks.begin_stage(hooks, state)
        for j in range(max(0, done_step - g0), n_k):
            state.stage_step = j
            state.epoch = j / per_epoch
            micro = [[stages[k][i] for i in mb] for mb in plan[j]]
            state.batch_task = micro[0][0].task if config.task_homogeneous_batches else None
            lr = config.lr * _lr_factor(config, j, n_k)
            for grp in opt.param_groups:
                grp["lr"] = lr
            state.lr = lr
            opt.zero_grad(set_to_none=True)
            batches = [_collate(tokenizer, mb, device) for mb in micro]   # once per step (they were built twice)
            n_tok = [int((b["labels"] != -100).sum()) for b in batches]
            loss_val = 0.0
            for batch in batches:
                state.batch = batch
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                logits = out.logits[:, :-1].float()
                tgt = batch["labels"][:, 1:]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                         ignore_index=-100, reduction="sum") / sum(n_tok)
                loss.backward()
                loss_val += float(loss.detach())
            state.batch["step_sample_ids"] = [s.id for mb in micro for s in mb]
            extra, masks = step_hooks.after_backward(hooks, state, named, loss=loss_val)
            loss_val += extra
            opt.zero_masked_grads(masks)
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(named.values()), config.max_grad_norm)
            opt.step(masks)
            state.step += 1
            state.stage_step = j + 1
            state.epoch = (j + 1) / per_epoch
            history.append({"step": state.step, "stage": k, "loss": loss_val, "lr": lr, "task": state.batch_task})
            step_hooks.end_step(hooks, state)
            bar.update(1)
            bar.set_postfix(stage=k, loss=f"{loss_val:.3f}")
            stage_end = j == n_k - 1
            if (config.eval_every and state.step % config.eval_every == 0) or stage_end:
                evaluate(k, state.epoch)
            if stage_end:
                if eval_samples:
                    model.eval()
                    c = exact_match(model, tokenizer, list(eval_samples), max_new_tokens=config.max_new_tokens,
                                    batch_size=config.eval_batch_size)
                    stage_end_eval.append(task_accuracy(list(eval_samples), c))
                    model.train()
                else:
                    stage_end_eval.append({})
            if ckpt is not None and config.checkpoint_every and (state.step % config.checkpoint_every == 0 or stage_end):
                _save_ckpt(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": state.step,
                                  "history": history, "stage_end_eval": stage_end_eval, "rng": _rng_states(),
                                  "last_eval": last_eval})
            if state.should_stop:
                break
        g0 += n_k
        if state.should_stop:
            break
    bar.close()
    model.eval()
    step_hooks.end_training(hooks, state)
    return TrainResult(steps=state.step, history=history, stage_end_eval=stage_end_eval, dynamics_path=dyn,
                       seconds=time.perf_counter() - t0, final_train_exact=last_eval,
                       stopped_early=state.should_stop)
