"""Benchmark of importance tracking and EPI: step overhead, state bytes, PEFT AdaLoRA comparison.

Prints one JSON object measured in one run:
- ``overhead_*``: step time of plain AdamW vs + ImportanceTracker.update vs + EPI (tracker,
  mask refresh every ``interval`` steps, exact masked step), as ratios to plain AdamW, on a GPT-2
  the size of the testbed's ``tiny`` model (and SmolLM2-135M with ``--smollm2``). Two routes: the
  testbed engine's (``MaskedAdamW``; ``overhead_tiny``, ``overhead_smollm2``) and the Trainer
  callback's (``torch.optim.AdamW`` + ``MaskedStepGuard``; ``overhead_tiny_guard``). Modes are
  interleaved round-robin so that machine load hits them alike; ``epi_ratio_amortised`` is the
  ratio of means over whole mask-refresh intervals (the target: <= 1.05 at the default interval).
  EPI's extra cost is per parameter (passes over parameters, gradients and importance state),
  while forward+backward grows with the tokens of a step: ``tokens_per_step_for_5pct`` solves, from
  forward+backward timed at 1x and 4x the benchmark batch in the same run, for the tokens per step
  at which the measured extra cost is 5% of a step.
- ``bytes_per_param``: tracker state per parameter and task (default fp32, lean bf16, lean
  blocks of 64) and EPI's owner map.
- ``peft``: ``ImportanceTracker(estimator="sensitivity")`` vs PEFT's AdaLoRA
  ``RankAllocator.update_ipt`` on the same model and gradients: max abs difference of the scores
  and the speed-up of the fused multi-tensor update over PEFT's per-parameter loop.

Usage: ``python benchmarks/bench_importance.py [--steps 40] [--interval 20] [--smollm2] [--threads 1]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from epi_utils.epi.importance import ImportanceTracker
from epi_utils.epi.isolation import MaskedStepGuard, make_policy


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
        t0 = time.perf_counter()
        alloc.update_ipt(model)
        t1 = time.perf_counter()
        tracker.update("task")
        t2 = time.perf_counter()
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


def step_overhead(model, *, steps: int = 30, interval: int = 20, batch: int = 16, seq: int = 32, vocab: int,
                  tasks=("a", "b", "c"), path: str = "engine", fwd_bwd_scaling: bool = False) -> dict:
    """Median step time per mode (interleaved round-robin), and ratios to plain AdamW.

    ``path="engine"``: the testbed engine's step (``epi_utils.lm.train``): ``MaskedAdamW`` without
    masks (plain) vs with the tracker vs EPI (``MaskedAdamW.zero_masked_grads`` and
    ``MaskedAdamW.step(masks)``, as the engine does). ``path="guard"``: ``torch.optim.AdamW`` vs with the tracker vs
    EPI through :class:`MaskedStepGuard` (the Trainer-callback route)."""
    from epi_utils.lm.masked_adamw import MaskedAdamW

    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = MaskedAdamW(named, lr=1e-4) if path == "engine" else torch.optim.AdamW(named.values(), lr=1e-4)
    tracker = ImportanceTracker(named)
    policy = make_policy("epi", tasks=list(tasks), isolation_ratio=0.05, mask_update_interval=interval,
                         warmup_steps=0, record=False)
    state = type("S", (), {})()
    state.model, state.named_params, state.step, state.batch_task = model, named, 0, tasks[0]
    policy.on_train_begin(state)
    guard = MaskedStepGuard()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    data = {"input_ids": ids, "labels": ids}
    times = {"adamw": [], "tracker": [], "epi": []}
    fwd_bwd: list[float] = []
    epi_step = 0
    for i in range(steps + 3):
        for mode in times:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            model(**data).loss.backward()
            t_fb = time.perf_counter()
            masks = None
            if mode == "tracker":
                tracker.update(tasks[i % len(tasks)])
            if mode == "epi":
                state.step, state.batch_task = epi_step, tasks[epi_step % len(tasks)]
                policy.after_backward(state)
                masks = policy.update_mask(state)
                if path == "engine":
                    opt.zero_masked_grads(masks)
                else:
                    guard.before_step(opt, named, masks)
            if path == "engine":
                opt.step(masks)
            else:
                opt.step()
            if mode == "epi":
                if path == "guard":
                    guard.after_step(opt)
                epi_step += 1
            if i >= 3:  # warm-up steps are not timed
                times[mode].append(time.perf_counter() - t0)
                fwd_bwd.append(t_fb - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    # EPI: the mask refresh happens once per interval; means over whole intervals amortise it
    n_whole = (len(times["epi"]) // interval) * interval or len(times["epi"])
    mean = {k: statistics.mean(v[:n_whole]) for k, v in times.items()}
    extra = mean["epi"] - mean["adamw"]  # seconds EPI adds to a step, refresh amortised
    out = {"path": path, "n_params": sum(p.numel() for p in named.values()), "steps": steps, "interval": interval,
           "tokens_per_step": batch * seq, "fwd_bwd_ms": 1e3 * statistics.median(fwd_bwd),
           "epi_extra_ms_amortised": 1e3 * extra}
    if fwd_bwd_scaling:
        # forward+backward time grows with tokens per step, EPI's cost does not (it is per parameter):
        # time forward+backward at 4x the tokens, interleaved, and solve for the tokens per step at
        # which EPI's amortised extra cost is 5% of a step.
        big = {"input_ids": ids.repeat(4, 1), "labels": ids.repeat(4, 1)}
        fb = {1: [], 4: []}
        for _ in range(3):
            for mult, d in ((1, data), (4, big)):
                t0 = time.perf_counter()
                model.zero_grad(set_to_none=True)
                model(**d).loss.backward()
                fb[mult].append(time.perf_counter() - t0)
        fb1, fb4 = min(fb[1]), min(fb[4])
        per_token = (fb4 - fb1) / (3 * batch * seq)
        rest = mean["adamw"] - fb1  # optimizer, zero_grad: independent of tokens
        need_fb = extra / 0.05 - rest
        out.update(fwd_bwd_4x_ms=1e3 * fb4, fwd_bwd_ms_per_token=1e3 * per_token,
                   tokens_per_step_for_5pct=max(batch * seq, int(batch * seq + (need_fb - fb1) / per_token))
                   if per_token > 0 else None)
    model.zero_grad(set_to_none=True)
    return out | {"adamw_ms": 1e3 * med["adamw"], "tracker_ms": 1e3 * med["tracker"], "epi_ms_median": 1e3 * med["epi"],
                  "tracker_ratio": med["tracker"] / med["adamw"], "epi_ratio_median": med["epi"] / med["adamw"],
                  "epi_ratio_amortised": mean["epi"] / mean["adamw"],
                  "epi_state_bytes_per_param": policy.state_bytes_per_param()}


def bytes_per_param(model) -> dict:
    named = {n: p for n, p in model.named_parameters()}
    out = {}
    for label, kw in {"default_fp32": {}, "lean_bf16": {"state_dtype": torch.bfloat16},
                      "lean_block64": {"block_size": 64}, "sensitivity_fp32": {"estimator": "sensitivity"}}.items():
        out[label] = ImportanceTracker(named, **kw).bytes_per_param()
    out["epi_owner_map"] = 1.0
    out["note"] = "tracker bytes are per parameter AND per task; EPI adds 1 byte/param (owner map)"
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps per mode (tiny)")
    ap.add_argument("--interval", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smollm2", action="store_true", help="also time SmolLM2-135M (slow on CPU)")
    ap.add_argument("--smollm2-steps", type=int, default=20, help="timed steps per mode on SmolLM2 "
                    "(a multiple of --interval amortises the mask refresh)")
    ap.add_argument("--smollm2-batch", type=int, default=4, help="sequences of 32 tokens per SmolLM2 step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tiny = _gpt2(128, 4, 1000)  # the testbed's tiny architecture (4 layers, 128 wide), 1000-word vocabulary
    result = {"threads": args.threads, "bytes_per_param": bytes_per_param(tiny),
              "peft": compare_with_peft(),
              "overhead_tiny": step_overhead(tiny, steps=args.steps, interval=args.interval, vocab=1000,
                                             fwd_bwd_scaling=True),
              "overhead_tiny_guard": step_overhead(tiny, steps=args.steps, interval=args.interval, vocab=1000,
                                                   path="guard")}
    if args.smollm2:
        from epi_utils.lm.models import load_model

        model, tok = load_model("smollm2", device="cpu")
        result["overhead_smollm2"] = step_overhead(model, steps=args.smollm2_steps, interval=args.interval,
                                                   batch=args.smollm2_batch, seq=32, vocab=len(tok),
                                                   fwd_bwd_scaling=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
