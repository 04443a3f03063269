"""SFT throughput and peak memory of the testbed's backends on this machine, printed as JSON.

    .venv/bin/python benchmarks/bench_sft.py                 # tiny and smollm2, 8 steps each
    .venv/bin/python benchmarks/bench_sft.py --models tiny --steps 20 --threads 1

Each backend runs in its own subprocess (so peak memory is per backend): load the model
(tiny: pretrained on the default world, cached; smollm2: cached fp32 copy), then ``--steps``
optimizer steps of ``train_sft`` on the default world's mixed schedule (batch 16, no evaluation).
Reported: training tokens per second (all non-padding tokens of the batches, prompt + response,
over the wall time of the steps, excluding loading and one warm-up step), peak resident memory of
the process (CPU) or peak CUDA memory, parameter count, load time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _one(model_name: str, steps: int, batch_size: int, device: str) -> dict:
    import torch

    from epi_utils.data.world import WorldConfig, build_world
    from epi_utils.lm.models import load_model
    from epi_utils.lm.train import TrainConfig, TrainHook, train_sft

    world = build_world(WorldConfig(), facts="real" if model_name == "smollm2" else "synthetic")
    t0 = time.perf_counter()
    model, tok = load_model(model_name, world=world if model_name == "tiny" else None, device=device, progress=False)
    load_s = time.perf_counter() - t0

    class Clock(TrainHook):
        def __init__(self):
            self.tokens, self.t_first, self.t_last = 0, None, None

        def on_step_end(self, state):
            if state.step == 1:           # first step = warm-up, not counted
                self.t_first = time.perf_counter()
                return
            self.tokens += self._tok
            self.t_last = time.perf_counter()

        def after_backward(self, state):
            self._tok = int(state.batch["attention_mask"].sum())

    clock = Clock()
    cfg = TrainConfig(batch_size=batch_size, max_steps=steps + 1, eval_every=0, eval_train=False)
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_sft(model, tok, world.mixed(), config=cfg, hooks=[clock], progress=False)
    secs = clock.t_last - clock.t_first
    out = {"model": model_name, "params": sum(p.numel() for p in model.parameters()), "load_seconds": round(load_s, 2),
           "steps_timed": steps, "batch_size": batch_size, "train_tokens_per_second": round(clock.tokens / secs, 1),
           "seconds_per_step": round(secs / steps, 3), "torch_threads": torch.get_num_threads(),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device != "cpu" and torch.cuda.is_available():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(_one(args.one, args.steps, args.batch_size, args.device)))
        return
    results = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--device", args.device, "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            results.append({"model": name, "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "sft", "device": args.device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
