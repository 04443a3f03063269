"""Benchmark of Study 05 (few-shot ACD): training and scoring speed, and the cpu-long wall time it implies.

Prints one JSON object measured in one run, per architecture and setting:
- ``train_eps_per_s``: episodic training steps per second on FewAsp(single)/train through
  :func:`epi_utils.acd.training.fit_model` (forward + backward + Adam; Proto-AWATT also makes its
  joint-policy REINFORCE step), one epoch of ``--episodes`` episodes, no validation;
- ``val_seconds``: one early-stopping validation pass (token bank of FewAsp(single)/val and
  ``--val-episodes`` episodes scored);
- ``eval_eps_per_s``: test episodes scored per second from a token bank;
- ``seconds_per_epoch_at``: ``epoch_episodes / train_eps_per_s + val_seconds`` for the profile's
  epoch size (``--epoch-episodes``, 800 in cpu-long).
``cpu_long_hours_per_epoch_all``: one epoch of every (architecture, setting) model times ``--seeds``
-- multiply by the mean number of epochs early stopping runs to get the cpu-long wall time.
The machine's load average is printed too: other jobs on a shared machine slow every number.

Usage: ``EPI_DATA_DIR=../shared/data python benchmarks/bench_acd.py [--episodes 40] [--threads 1]
[--settings 5way5shot 10way10shot] [--epoch-episodes 800] [--val-episodes 300] [--seeds 5]``
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from epi_utils.acd.config import Config, parse_setting
from epi_utils.acd.encoders import encode_bank
from epi_utils.acd.episodes import sample_episodes
from epi_utils.acd.study import new_model
from epi_utils.acd.threshold import ThresholdPolicy
from epi_utils.acd.training import fit_model, load_data, score_episodes, validation_auc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40, help="training / test episodes timed per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--attn-dim", type=int, default=32)
    ap.add_argument("--settings", nargs="+", default=["5way5shot", "5way10shot", "10way5shot", "10way10shot"])
    ap.add_argument("--epoch-episodes", type=int, default=800, help="training episodes per epoch of the profile")
    ap.add_argument("--val-episodes", type=int, default=300, help="validation episodes per epoch of the profile")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_data(datasets=("FewAsp(single)",))
    out = {"load_seconds": round(time.perf_counter() - t0, 2), "threads": args.threads,
           "loadavg_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "results": {}}
    key = lambda sp: ("FewAsp(single)", sp)  # noqa: E731
    cfg = Config(settings=args.settings, hidden=args.hidden, attn_dim=args.attn_dim, device="cpu")
    total_epoch_s = 0.0
    for arch in ("protonet", "proto_awatt"):
        for setting in args.settings:
            n, k = parse_setting(setting)
            model = new_model(arch, cfg, data, 0)
            pols = {n: ThresholdPolicy(n, init_threshold=1 / n)} if arch == "proto_awatt" else None
            kw = dict(shapes=[(n, k)], n_query=5, max_epochs=1, patience=1, lr=3e-3, policies=pols)
            fit_model(model, data.splits[key("train")], data.encoded[key("train")], episodes_per_epoch=3,
                      rng=np.random.default_rng(0), **kw)  # warm-up
            fit = fit_model(model, data.splits[key("train")], data.encoded[key("train")],
                            episodes_per_epoch=args.episodes, rng=np.random.default_rng(1), **kw)
            train_rate = args.episodes / fit.epoch_seconds[0]
            val = sample_episodes(data.splits[key("val")], args.val_episodes, n_way=n, k_shot=k, n_query=5,
                                  rng=np.random.default_rng(3))
            t = time.perf_counter()
            validation_auc(model, val, data.encoded[key("val")])
            val_s = time.perf_counter() - t
            eps = sample_episodes(data.splits[key("test")], args.episodes, n_way=n, k_shot=k, n_query=5,
                                  rng=np.random.default_rng(2))
            bank = encode_bank(model.encoder, data.encoded[key("test")])
            t = time.perf_counter()
            score_episodes(model, eps, bank)
            eval_rate = args.episodes / (time.perf_counter() - t)
            per_epoch = args.epoch_episodes / train_rate + val_s
            total_epoch_s += per_epoch * args.seeds
            out["results"].setdefault(arch, {})[setting] = {
                "train_eps_per_s": round(train_rate, 2), "val_seconds": round(val_s, 2),
                "eval_eps_per_s": round(eval_rate, 2), "seconds_per_epoch_at": round(per_epoch, 1)}
    out["epoch_episodes"], out["seeds"] = args.epoch_episodes, args.seeds
    out["cpu_long_hours_per_epoch_all"] = round(total_epoch_s / 3600, 3)
    out["loadavg_1min_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
