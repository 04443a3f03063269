"""Benchmark of EPI's state memory and step cost (issues 14, 19) and of the tracker against PEFT's AdaLoRA.

Prints one JSON object measured in one run (modes interleaved round-robin so that machine load
hits them alike; one thread by default). Modes: ``legacy`` (EPI's state before issue 19: bool
critical sets, int8 owner map, a cached bool mask per task, frozen positions cached across steps,
importance as its own tracker pass), ``fp32`` (the EPI policy's default: bit-packed critical sets,
owners derived from them, each step's frozen elements as a packed bitmap (``StepMasks``: the OR of
the other tasks' packed sets, overlap owners written in), read by the fused C kernels of
``MaskedAdamW`` (``epi_utils.lm.fused_kernels``: the importance fold and the zeroed frozen
gradients in one pass, torch's AdamW arithmetic in two passes that skip the frozen elements),
``fp32_eager`` (the same state on the eager torch path, ``fused=False``:
frozen positions by one ``nonzero`` over the unpacked bitmap, importance fused into the gradient
pass as multi-tensor ops, per-tensor index ops, the eager refresh), ``fp32_refresh_eager`` (``fp32``'s
kernel step with the eager refresh: the refresh kernel's effect in the same run), ``bf16`` (fp32 with a bf16 EMA: eager importance,
kernel masking), ``lean`` (an fp32 EMA per block of 64 elements).

- ``memory``: EPI state in bytes per parameter for T = 3 and T = 7 tasks in each mode, measured
  (``epi_state.measured_bytes_per_param``) on the tiny model, beside the memory model
  (``epi_state.epi_state_bytes_per_param``) at the measured overlap share and AdamW's own state.
- ``refresh_*``: a mask refresh in ms per million parameters, today's path vs the compact modes
  (``fp32``: the refresh kernel of ``epi_utils.isolation.refresh``; ``fp32_refresh_eager``: the same
  state refreshed by the eager path), and ``ms`` per refresh.
- ``refresh_kernel_*``: the refresh's time and the amortised ``extra_over_bound`` of ``fp32`` (refresh
  kernel) and ``fp32_refresh_eager`` (eager refresh) side by side (from ``step_*``; where no refresh
  step was timed, from ``refresh_*``).
- ``step_*``: EPI's extra time per step (over AdamW on the same path: ``adamw``, the kernels' AdamW
  without masks, the default of every full-SFT run, for the kernel modes; ``adamw_eager``, torch's
  eager AdamW, for ``legacy`` and ``fp32_eager``) against the memory-traffic bound of its work (bytes that
  must be read and written per step, and per refresh / interval, over the copy bandwidth measured
  in the same run; target <= 2x), beside the bytes its passes move as implemented, per pass
  (importance, masks, masking), and, with the refresh amortised, as a share of a step at 1024
  tokens (target <= 5%).
- ``peft``: ``ImportanceTracker(estimator="sensitivity")`` vs PEFT's AdaLoRA
  ``RankAllocator.update_ipt`` on the same gradients: max abs difference, speed-up.

Times are this thread's CPU time by default with one thread (``--clock cpu``: on a shared machine
the time the process waits for a core is not counted; ``--clock wall`` for elapsed time).

Usage: ``python benchmarks/bench_importance.py [--steps 40] [--interval 20] [--smollm2] [--threads 1] [--clock cpu]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import types

import torch

from epi_utils.importance.estimators import ImportanceTracker
from epi_utils.isolation.policies import make_policy
from epi_utils.isolation.state import epi_state_bytes_per_param, measured_bytes_per_param

_CLOCK = {"clock": time.perf_counter}


def _now() -> float:
    """The benchmark's clock (``--clock``): ``cpu`` = CPU time of this thread
    (``time.thread_time``; with one torch thread all the timed work runs on it, so time lost to
    other jobs on a loaded machine is not counted), ``wall`` = ``time.perf_counter``."""
    return _CLOCK["clock"]()


def adalora_model(*, n_embd: int = 128, n_layer: int = 4, r: int = 8, seed: int = 0):
    """A GPT-2 with PEFT AdaLoRA adapters on attention and MLP, plus its RankAllocator."""
    from peft import AdaLoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=500, n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=4))
    cfg = AdaLoraConfig(init_r=r, target_r=r // 2, target_modules=["c_attn", "c_proj", "c_fc"], beta1=0.85,
                        beta2=0.85, total_step=1000, tinit=10, tfinal=10, fan_in_fan_out=True)
    model = get_peft_model(base, cfg)
    return model, model.base_model.rankallocator


def lora_params(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n and "default" in n}


def compare_with_peft(*, n_updates: int = 20, seed: int = 0, n_embd: int = 128, n_layer: int = 4) -> dict:
    """Same gradients into PEFT's update_ipt and the tracker; returns max |difference| and timings."""
    model, alloc = adalora_model(n_embd=n_embd, n_layer=n_layer, seed=seed)
    params = lora_params(model)
    with torch.no_grad():  # AdaLoRA initialises E (and B) at zero: give every adapter weight a value
        g = torch.Generator().manual_seed(seed + 1)
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=g))
    tracker = ImportanceTracker(params, estimator="sensitivity", beta=alloc.beta1, beta_unc=alloc.beta2,
                                normalize="none")
    g = torch.Generator().manual_seed(seed + 2)
    t_peft, t_ours = [], []
    for _ in range(n_updates):
        for p in params.values():
            p.grad = torch.randn(p.shape, generator=g)
        t0 = _now()
        alloc.update_ipt(model)
        t1 = _now()
        tracker.update("task")
        t2 = _now()
        t_peft.append(t1 - t0)
        t_ours.append(t2 - t1)
    ours = tracker.raw_scores("task")
    diff = max(float((alloc._element_score(n) - ours[n]).abs().max()) for n in params)
    scale = max(float(alloc._element_score(n).abs().max()) for n in params)
    return {"n_tensors": len(params), "n_params": sum(p.numel() for p in params.values()), "n_updates": n_updates,
            "max_abs_diff": diff, "max_score": scale, "peft_update_ms": 1e3 * statistics.median(t_peft),
            "tracker_update_ms": 1e3 * statistics.median(t_ours),
            "speedup_vs_peft": statistics.median(t_peft) / statistics.median(t_ours),
            "speedup_vs_peft_best_of": min(t_peft) / min(t_ours)}


def _gpt2(n_embd, n_layer, vocab, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=n_embd, n_layer=n_layer, n_head=4,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


MODES = ("legacy", "fp32", "bf16", "lean")


def _epi(mode: str, named, tasks, *, interval: int, ratio: float, lr: float = 1e-4):
    """EPI policy and MaskedAdamW of ``mode``: ``legacy`` = the state before issue 19 (bool critical
    sets, int8 owner map, a cached mask per task, positions cached across steps, importance as a
    separate tracker pass); the others are compact (packed sets, derived owners, importance fused
    into ``zero_masked_grads``) with an fp32, bf16 or block-wise (64) EMA."""
    from epi_utils.lm.masked_adamw import MaskedAdamW

    kw = {"fp32": {}, "fp32_eager": {}, "fp32_refresh_eager": {}, "legacy": {}, "bf16": {"state_dtype": torch.bfloat16},
          "lean": {"block_size": 64}}[mode]
    pol = make_policy("epi", tasks=list(tasks), isolation_ratio=ratio, mask_update_interval=interval, warmup_steps=0,
                      compact_state=mode != "legacy", fuse_importance=mode != "legacy", **kw)
    pol.fused_refresh = mode not in ("fp32_eager", "fp32_refresh_eager")  # the refresh kernel (legacy: eager anyway)
    opt = MaskedAdamW(named, lr=lr, frozen_cache="persistent" if mode == "legacy" else "step",
                      fused=False if mode in ("legacy", "fp32_eager") else None)
    return pol, opt


def _batches(tasks, *, vocab: int, batch: int, seq: int, seed: int = 0) -> dict:
    """One fixed batch per task; task k draws tokens from its own slice of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    width = max(vocab // len(tasks), 2)
    out = {}
    for k, t in enumerate(tasks):
        ids = torch.randint(k * width, (k + 1) * width, (batch, seq), generator=g)
        out[t] = {"input_ids": ids, "labels": ids}
    return out


FUSED = ("fp32", "fp32_refresh_eager", "bf16", "lean")  # modes whose masks are packed bitmaps read by MaskedAdamW's fused kernels
EAGER = ("legacy", "fp32_eager")  # modes on the eager torch path: measured against the eager AdamW


def _state(model, opt, named, task):
    return types.SimpleNamespace(model=model, optimizer=opt, named_params=named, step=0, stage=0, batch_task=task)


def must_bytes_per_param(mode: str, *, n_tasks: int, frozen_share: float) -> dict[str, float]:
    """Bytes per parameter that EPI's work of one non-refresh step MUST read or write, whatever
    the implementation (one fused pass each; ``f`` = frozen share of the step's task), and of one
    refresh (``refresh``, per parameter, to be divided by the interval):

    - importance (the EPI default, Taylor): read the parameter and the gradient, read and write the
      task's EMA: 4 + 4 + 4 + 4 = 16 (bf16 EMA: 12; lean, one fp32 score per 64 elements: 8.125);
    - masks: read the other tasks' packed critical sets, (T - 1) / 8;
    - masking: write a zero over each frozen gradient element (4f); a masked AdamW step needs
      nothing beyond reading the mask (counted above), it updates the same elements AdamW does;
    - refresh: read every task's EMA once (4T; bf16 2T, lean 4T / 64) and write its packed set (T / 8)."""
    T, f = n_tasks, frozen_share
    mode = "fp32" if mode in ("fp32_eager", "fp32_refresh_eager") else mode
    imp = {"legacy": 16.0, "fp32": 16.0, "bf16": 12.0, "lean": 8.0 + 8 / 64}[mode]
    ema = {"legacy": 4.0, "fp32": 4.0, "bf16": 2.0, "lean": 4 / 64}[mode]
    out = {"importance": imp, "masks": (T - 1) / 8, "masking": 4 * f}
    out["total"] = sum(out.values())
    out["refresh"] = T * ema + T / 8
    return out


def extra_bytes_per_param(mode: str, *, n_tasks: int, frozen_share: float) -> dict[str, float]:
    """Bytes per parameter that EPI's extra passes of one (non-refresh) step move, read + written,
    pass by pass AS IMPLEMENTED (``f`` = frozen share of the step's task; an upper count beside
    the must-move one of :func:`must_bytes_per_param`):

    - importance: eager (``legacy``, ``fp32_eager``): product, absolute value, scaled EMA, add
      (12 + 8 + 8 + 12 B) = 40; bf16 adds the up/down casts of the EMA (6 + 6) = 52; lean: product
      and abs (20), block means (4), the EMA of 1/64 = 25; fused (``fp32``): one pass reading the
      parameter, the gradient and the EMA and writing the EMA = 16.
    - masks: eager compact (``fp32_eager``): OR of the other tasks' packed sets (2/8 B each; the
      first is copied), overlap owners written (small, not counted), one unpack (byte to int32 and
      table gather: 1/8 + 4/8 + 4/8 + 1 = 2.1), one ``nonzero`` over the n bools (1 + 8f), the
      positions made local to each tensor (read, offset, write: 24f) = 2.1 + 0.25 (T - 1) + 33f;
      with the kernels (``fp32``, ``bf16``, ``lean``): the OR alone, 0.25 (T - 1); legacy caches
      positions per task: 0.
    - masking: eager: zero the frozen gradients (positions 8f, write 4f), save and restore
      parameter, ``exp_avg``, ``exp_avg_sq`` (3 x 2 x (8 + 4 + 4) f = 96f): 108f; with the kernels:
      the bitmap read by the zeroing, the count and AdamW's two passes (4 / 8), zeros written (4f);
      the frozen values stay in registers while AdamW's passes skip them: 0.5 + 4f.
    """
    f = frozen_share
    mode = "fp32" if mode == "fp32_refresh_eager" else mode
    if mode == "legacy":
        return {"importance": 40.0, "masks": 0.0, "masking": 108 * f, "total": 40.0 + 108 * f}
    if mode != "fp32_eager":
        imp = {"fp32": 16.0, "bf16": 52.0, "lean": 25.0}[mode]
        masks, masking = 0.25 * (n_tasks - 1), 0.5 + 4 * f
        return {"importance": imp, "masks": masks, "masking": masking, "total": imp + masks + masking}
    imp = 40.0
    masks = 2.1 + 0.25 * (n_tasks - 1) + 33 * f
    masking = 108 * f
    return {"importance": imp, "masks": masks, "masking": masking, "total": imp + masks + masking}


def step_cost(model, *, vocab: int, steps: int, interval: int, batch: int, seq: int, tasks=("a", "b", "c"),
              ratio: float = 0.05, modes=("legacy", "fp32", "fp32_refresh_eager", "fp32_eager", "bf16"),
              tokens_target: int = 1024) -> dict:
    """EPI's extra time per step, interleaved round-robin with plain MaskedAdamW (``adamw``).

    Each step is timed in segments: zero_grad + forward + backward, then the post-backward work
    where all of EPI's happens, itself in three: ``importance`` (``after_backward`` and the
    importance fold, ``flush_importance``; in the modes of ``FUSED`` the fold runs in the kernel
    pass of ``zero_masked_grads`` that also zeroes the frozen gradients, as in training, and that
    call is timed here), ``masks`` (``update_mask`` and, on the eager path, the frozen positions),
    ``masking`` (``zero_masked_grads`` unless timed as importance, clipping, the masked step;
    minus AdamW's own). ``extra_ms``: median post-backward time on non-refresh steps minus AdamW's;
    ``refresh_ms``: median extra on refresh steps (mask recomputation) minus that;
    ``extra_amortised_ms = extra_ms + refresh_ms / interval``. Bounds: bytes over the copy
    bandwidth measured here, interleaved: ``bound_ms`` from the bytes EPI's work must move
    (:func:`must_bytes_per_param`; ``extra_over_bound``, target <= 2; ``amortised_over_bound`` with
    the refresh's bytes / interval), ``passes_bound_ms`` from the bytes its passes move as
    implemented (:func:`extra_bytes_per_param`; ``extra_over_passes``: how far the passes are from
    their own traffic); ``pass_over_bound``: each segment's extra over its must-move bytes.
    ``share_of_step_at_1k``: amortised extra over an AdamW step at ``tokens_target`` tokens
    (forward+backward timed at that size here)."""
    from epi_utils.lm.masked_adamw import MaskedAdamW

    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    n = sum(p.numel() for p in named.values())
    data = _batches(tasks, vocab=vocab, batch=batch, seq=seq)
    runs = {"adamw": (None, MaskedAdamW(named, lr=1e-4)), "adamw_eager": (None, MaskedAdamW(named, lr=1e-4, fused=False))}
    runs |= {m: _epi(m, named, tasks, interval=interval, ratio=ratio) for m in modes}
    states = {m: _state(model, opt, named, tasks[0]) for m, (pol, opt) in runs.items()}
    for m, (pol, opt) in runs.items():
        if pol is not None:
            pol.on_train_begin(states[m])
            pol.on_stage_begin(states[m])
    post = {m: [] for m in runs}
    parts = {m: {"importance": [], "masks": [], "masking": [], "zero": []} for m in runs}
    copies = []
    src = torch.rand(max(n, 8_000_000))  # larger than the caches: memory bandwidth
    dst = torch.empty_like(src)
    refresh = {m: [] for m in runs}
    frozen = {m: [] for m in runs}
    fwd = []
    for i in range(steps + 2):
        task = tasks[i % len(tasks)]
        t0 = _now()
        dst.copy_(src)  # copy bandwidth, interleaved with the modes (same machine load)
        copies.append(8 * src.numel() / (_now() - t0))
        for m, (pol, opt) in runs.items():
            st = states[m]
            st.batch_task = task
            t0 = _now()
            opt.zero_grad(set_to_none=True)
            model(**data[task]).loss.backward()
            t1 = _now()
            masks, n_up = {}, 0
            fused = m in FUSED  # the importance fold in the kernels' pass of zero_masked_grads
            if pol is not None:
                n_up = pol.n_mask_updates
                pol.after_backward(st)
                if pol.n_mask_updates == n_up and not _refresh_due(pol, st) and not fused:
                    opt.flush_importance()  # timed as the importance pass (a refresh flushes it itself)
            ta = _now()
            if pol is not None:
                masks = pol.update_mask(st) or {}
                if hasattr(masks, "frozen_positions") and not fused:
                    masks.frozen_positions()  # eager path: computed once per step, cached on the masks
            tb = _now()
            opt.zero_masked_grads(masks)  # with the kernels: the importance fold and the zeroing, one pass
            tz = _now()
            torch.nn.utils.clip_grad_norm_(list(named.values()), 1.0)
            opt.step(masks)
            t2 = _now()
            st.step += 1
            if i < 2:  # warm-up steps are not timed
                continue
            fwd.append(t1 - t0)
            if pol is not None and pol.n_mask_updates > n_up:
                refresh[m].append(t2 - t1)
            else:
                post[m].append(t2 - t1)
                imp, masking = (ta - t1 + tz - tb, t2 - tz) if fused else (ta - t1, t2 - tb)
                for key, v in (("importance", imp), ("masks", tb - ta), ("masking", masking), ("zero", tz - tb)):
                    parts[m][key].append(v)
                if masks:
                    frozen[m].append(sum(int((~v).sum()) for v in masks.values()) / n)
    del src, dst
    bw = statistics.median(copies[2:])
    fb = {1: [], tokens_target: []}
    ids = torch.randint(0, vocab, (max(1, tokens_target // seq), seq), generator=torch.Generator().manual_seed(3))
    big = {"input_ids": ids, "labels": ids}
    for _ in range(2):
        for key, d in ((1, data[tasks[0]]), (tokens_target, big)):
            t0 = _now()
            model.zero_grad(set_to_none=True)
            model(**d).loss.backward()
            fb[key].append(_now() - t0)
    model.zero_grad(set_to_none=True)
    baselines = {b: (statistics.median(post[b]), statistics.median(parts[b]["masking"]),
                     statistics.median(parts[b]["zero"])) for b in ("adamw", "adamw_eager")}
    base = baselines["adamw"][0]
    step_1k = min(fb[tokens_target]) + base
    out = {"n_params": n, "tokens_per_step": batch * seq, "steps": steps, "interval": interval, "ratio": ratio,
           "n_tasks": len(tasks), "copy_bandwidth_gb_s": bw / 1e9, "copy_bandwidth_best_gb_s": max(copies) / 1e9,
           "fwd_bwd_ms": 1e3 * statistics.median(fwd),
           "adamw_post_ms": 1e3 * base, "adamw_eager_post_ms": 1e3 * baselines["adamw_eager"][0], "tokens_1k": big["input_ids"].numel(),
           "step_ms_at_1k": 1e3 * step_1k, "modes": {}}
    for m in modes:
        base_m, base_masking, base_zero = baselines["adamw_eager" if m in EAGER else "adamw"]
        extra = statistics.median(post[m]) - base_m
        ref = (statistics.median(refresh[m]) - statistics.median(post[m])) if refresh[m] else 0.0
        f = statistics.mean(frozen[m]) if frozen[m] else 0.0
        must = must_bytes_per_param(m, n_tasks=len(tasks), frozen_share=f)
        passes = extra_bytes_per_param(m, n_tasks=len(tasks), frozen_share=f)
        bound = must["total"] * n / bw
        bound_amort = (must["total"] + must["refresh"] / interval) * n / bw
        amort = extra + ref / interval
        seg = {k: statistics.median(v) for k, v in parts[m].items() if k != "zero"}
        seg["masking"] -= base_masking - (base_zero if m in FUSED else 0.0)  # AdamW's own clipping and step
        out["modes"][m] = {"extra_ms": 1e3 * extra, "refresh_ms": 1e3 * ref, "extra_amortised_ms": 1e3 * amort,
                           "frozen_share": f, "must_bytes_per_param": must, "bytes_per_param": passes,
                           "bound_ms": 1e3 * bound, "extra_over_bound": extra / bound,
                           "amortised_over_bound": amort / bound_amort,
                           "passes_bound_ms": 1e3 * passes["total"] * n / bw,
                           "extra_over_passes": extra / (passes["total"] * n / bw),
                           "pass_ms": {k: 1e3 * v for k, v in seg.items()},
                           "pass_over_bound": {k: (v / (must[k] * n / bw) if must[k] > 0 else None)
                                               for k, v in seg.items()},
                           "share_of_step_at_1k": amort / step_1k,
                           "n_timed": len(post[m]), "n_refresh": len(refresh[m])}
    return out


def _refresh_due(pol, st) -> bool:
    """Whether ``update_mask`` of this step will recompute the masks (EPI's schedule)."""
    return st.step >= pol.warmup and (st.step - pol.warmup) % pol.interval == 0 and st.step != pol._last_update_step


def memory(model, *, n_tasks: int, vocab: int, ratio: float = 0.05, steps: int = 2, interval: int = 1) -> dict:
    """EPI state bytes per parameter measured after ``steps`` rounds over ``n_tasks`` tasks (every
    task has an EMA and a critical set) in each mode, beside the memory model with the measured
    share of overlapping elements, and AdamW's own state."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    tasks = [f"t{k}" for k in range(n_tasks)]
    data = _batches(tasks, vocab=vocab, batch=4, seq=32, seed=1)
    out = {"n_tasks": n_tasks, "ratio": ratio}
    for m in MODES:
        pol, opt = _epi(m, named, tasks, interval=interval, ratio=ratio)
        st = _state(model, opt, named, tasks[0])
        pol.on_train_begin(st)
        for i in range(steps * n_tasks + 1):
            st.batch_task = tasks[i % n_tasks]
            opt.zero_grad(set_to_none=True)
            model(**data[st.batch_task]).loss.backward()
            pol.after_backward(st)
            masks = pol.update_mask(st) or {}
            opt.zero_masked_grads(masks)
            opt.step(masks)
            st.step += 1
        for t in tasks:  # legacy caches one mask per task once each task has stepped
            pol.allowed_for(t)
        owner = pol._owner_flat.to_int8()
        claims = sum(pol._crit_flat[t].to(torch.int8) for t in pol._crit_flat)
        ovl = int((claims > 1).sum()) / owner.numel()
        measured = measured_bytes_per_param(pol, optimizer=opt)
        adamw = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                    if torch.is_tensor(v) and v.dim() > 0) / owner.numel()
        out[m] = {"measured": measured, "model": epi_state_bytes_per_param(n_tasks, mode=m, ratio=ratio,
                                                                             overlap_share=ovl),
                  "model_worst_overlap": epi_state_bytes_per_param(n_tasks, mode=m, ratio=ratio)["total"],
                  "overlap_share": ovl, "adamw_measured": adamw}
        model.zero_grad(set_to_none=True)
    out["target"] = {"bf16": 2 * n_tasks + 1, "lean": 0.5 * n_tasks + 1}
    return out


def refresh_time(model, *, vocab: int, n_tasks: int = 3, ratio: float = 0.05, reps: int = 5,
                 modes=("fp32", "fp32_refresh_eager", "bf16", "lean")) -> dict:
    """Mask refresh (scores -> critical sets -> owners, turnover recorded) in ms per million
    parameters, interleaved: ``today`` (legacy state, every task's fp32 scores built at once, as
    before issue 19) vs the compact modes (one task's scores at a time; ``fp32``: the refresh
    kernel, ``fp32_refresh_eager``: the eager refresh of the same state)."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    n = sum(p.numel() for p in named.values())
    tasks = [f"t{k}" for k in range(n_tasks)]
    data = _batches(tasks, vocab=vocab, batch=4, seq=32, seed=2)
    pols = {"today": _epi("legacy", named, tasks, interval=10 ** 6, ratio=ratio)[0]}
    pols |= {m: _epi(m, named, tasks, interval=10 ** 6, ratio=ratio)[0] for m in modes}
    for pol in pols.values():
        pol.on_train_begin(_state(model, None, named, tasks[0]))
    for t in tasks:
        model.zero_grad(set_to_none=True)
        model(**data[t]).loss.backward()
        for pol in pols.values():
            pol.tracker.update(t)
    model.zero_grad(set_to_none=True)
    times = {m: [] for m in pols}
    for _ in range(reps):
        for m, pol in pols.items():
            tr = pol.tracker
            t0 = _now()
            scores = {t: (tr.flat_scores(t) if m == "today" else tr.lazy_flat_scores(t)) for t in tr.tasks}
            pol.set_critical_flat(scores, names=tr.names, shapes=[p.shape for p in tr.params])
            del scores
            times[m].append(_now() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {"n_params": n, "n_tasks": n_tasks, "ms": {m: 1e3 * v for m, v in med.items()},
            "ms_per_million_params": {m: 1e3 * v / (n / 1e6) for m, v in med.items()},
            "ratio_to_today": {m: v / med["today"] for m, v in med.items()}}


def refresh_kernel_summary(step: dict, refresh: dict) -> dict:
    """The refresh kernel against the eager refresh in one run: per mode (``fp32``: kernel,
    ``fp32_refresh_eager``: eager) the refresh's time (``refresh_ms``: the timed refresh steps of
    ``step``, else ``refresh``'s median), its read-once bound, and the amortised extra over the
    amortised bound (``amortised_over_bound``; target <= 2), of which ``refresh_part_of_ratio`` is
    the refresh's (the two modes' steps between refreshes run the same code: their ``extra_ms``
    differ by noise only)."""
    out = {}
    for m in ("fp32", "fp32_refresh_eager"):
        if m not in step["modes"]:
            continue
        r = step["modes"][m]
        n, bw, interval = step["n_params"], step["copy_bandwidth_gb_s"] * 1e9, step["interval"]
        src = "step" if r["n_refresh"] else "refresh_time"
        ref_ms = r["refresh_ms"] if r["n_refresh"] else refresh["ms"].get(m, float("nan"))
        must = r["must_bytes_per_param"]
        bound_amort_ms = 1e3 * (must["total"] + must["refresh"] / interval) * n / bw
        out[m] = {"refresh_ms": ref_ms, "refresh_from": src, "refresh_bound_ms": 1e3 * must["refresh"] * n / bw,
                  "refresh_over_bound": ref_ms / (1e3 * must["refresh"] * n / bw),
                  "extra_ms": r["extra_ms"], "extra_amortised_ms": r["extra_ms"] + ref_ms / interval,
                  "amortised_over_bound": (r["extra_ms"] + ref_ms / interval) / bound_amort_ms,
                  "refresh_part_of_ratio": ref_ms / interval / bound_amort_ms}  # the refresh's share of the ratio
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per mode (tiny)")
    ap.add_argument("--interval", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default=None,
                    help="cpu: this thread's CPU time (default with --threads 1: robust to other jobs on the "
                    "machine); wall: elapsed time (default with more threads)")
    ap.add_argument("--smollm2", action="store_true", help="also time SmolLM2-135M (slow on CPU)")
    ap.add_argument("--smollm2-steps", type=int, default=20, help="timed steps per mode on SmolLM2")
    ap.add_argument("--smollm2-batch", type=int, default=4, help="sequences of 32 tokens per SmolLM2 step "
                    "(EPI's extra work does not depend on it; forward+backward is also timed at 1024 tokens)")
    ap.add_argument("--skip-peft", action="store_true")
    ap.add_argument("--only-smollm2", action="store_true", help="SmolLM2 only (implies --smollm2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    _CLOCK["clock"] = time.thread_time if clock == "cpu" else time.perf_counter
    result = {"threads": args.threads, "clock": clock}
    if not args.only_smollm2:
        tiny = _gpt2(128, 4, 1000)  # the testbed's tiny architecture (4 layers, 128 wide), 1000-word vocabulary
        result |= {"memory": {f"T{t}": memory(tiny, n_tasks=t, vocab=1000) for t in (3, 7)},
                   "refresh_tiny": refresh_time(tiny, vocab=1000),
                   "step_tiny": step_cost(tiny, vocab=1000, steps=args.steps, interval=args.interval, batch=32,
                                          seq=32)}
        result["refresh_kernel_tiny"] = refresh_kernel_summary(result["step_tiny"], result["refresh_tiny"])
    if not (args.skip_peft or args.only_smollm2):
        result["peft"] = compare_with_peft()
    if args.smollm2 or args.only_smollm2:
        from epi_utils.lm.models import load_model

        model, tok = load_model("smollm2", device="cpu")
        result["refresh_smollm2"] = refresh_time(model, vocab=len(tok), reps=2, modes=("fp32", "fp32_refresh_eager"))
        result["step_smollm2"] = step_cost(model, vocab=len(tok), steps=args.smollm2_steps, interval=args.interval,
                                           batch=args.smollm2_batch, seq=32,
                                           modes=("legacy", "fp32", "fp32_refresh_eager", "fp32_eager"))
        result["refresh_kernel_smollm2"] = refresh_kernel_summary(result["step_smollm2"], result["refresh_smollm2"])
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
