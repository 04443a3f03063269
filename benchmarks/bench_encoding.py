"""The per-tokenizer encoding cache (``epi_utils.lm.sft_format``) on a study's SFT loop, printed as JSON.

    .venv/bin/python benchmarks/bench_encoding.py [--reps 3] [--epochs 2]

One world of study 03's cpu profile (its pretrained ``tiny`` model, cached or pretrained once):
``--epochs`` epochs of ``train_sft`` with the study's batch size and learning rate, evaluating every
training sample (greedy exact match + teacher-forced loss) after each epoch, as the convergence
checks of studies 01-03 do, then the final exact match and ``response_stats``. Each repetition runs
the loop with the cache off and on (interleaved, so machine load hits both alike) from the same
model copy and seed; the time is this thread's CPU time with one torch thread. Prints the median
seconds of each, the ratio off / on and whether both gave identical losses and predictions.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time


def _loop(base, tok, train, *, epochs: int, lr: float, batch_size: int) -> tuple[float, list]:
    import torch

    from epi_utils.lm.evaluate import exact_match, response_stats
    from epi_utils.lm.train import TrainConfig, train_sft

    model = copy.deepcopy(base)
    torch.manual_seed(0)
    t0 = time.thread_time()
    out = []
    for e in range(epochs):
        cfg = TrainConfig(lr=lr, batch_size=batch_size, epochs=1, eval_every=0, eval_train=False,
                          schedule="constant", warmup_ratio=0.0, seed=e)
        train_sft(model, tok, [list(train)], config=cfg, progress=False)
        out.append([bool(c) for c in exact_match(model, tok, train)])
        out.append([round(r["loss"], 12) for r in response_stats(model, tok, train)])
    return time.thread_time() - t0, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from epi_utils.ilp import training
    from epi_utils.ilp.config import Config
    from epi_utils.lm import sft_format

    torch.set_num_threads(1)
    cfg = Config()
    world = training.make_world(cfg, 0)
    base, tok, _ = training.load_base(cfg, world, 0)
    train = world.split("train")
    times = {"off": [], "on": []}
    results = {}
    for _ in range(args.reps):
        for mode in ("off", "on"):
            sft_format.set_encoding_cache(mode == "on")
            secs, res = _loop(base, tok, train, epochs=args.epochs, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size)
            times[mode].append(secs)
            results[mode] = res
    sft_format.set_encoding_cache(True)
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {"benchmark": "encoding_cache", "samples": len(train), "epochs": args.epochs, "reps": args.reps,
           "clock": "thread CPU time, 1 torch thread", "seconds_off": med["off"], "seconds_on": med["on"],
           "ratio_off_over_on": med["off"] / med["on"], "identical_results": results["off"] == results["on"],
           "all_seconds": times}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
