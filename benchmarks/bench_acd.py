"""Benchmark of Study 05 (few-shot ACD): training and evaluation episodes per second.

Prints one JSON object measured in one run, per method (ProtoNet, Proto-AWATT) and setting:
- ``train_eps_per_s``: episodic training steps (forward + backward + Adam) per second on
  FewAsp(single)/train;
- ``eval_eps_per_s``: test episodes scored per second from a token bank (each test sentence
  encoded once, then per-episode prototype/attention heads), plus the one-off bank time;
- ``eval_direct_eps_per_s``: test episodes scored by re-encoding every sentence each episode
  (what evaluation would cost without the bank), to show the bank's speed-up;
- ``load_seconds``: loading, validating and tokenising the FewAsp splits (GloVe matrix cached).
The machine's load average is printed too: other jobs on a shared machine slow every number.

Usage: ``EPI_DATA_DIR=../shared/data python benchmarks/bench_acd.py [--episodes 40] [--threads 1]
[--hidden 64] [--attn-dim 32] [--settings 5way5shot 10way10shot]``
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from epi_utils.acd.encoders import encode_bank
from epi_utils.acd.episodes import sample_episodes
from epi_utils.acd.training import ACDConfig, _new_model, episode_tensors, load_data, parse_setting, score_episodes, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40, help="episodes timed per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--attn-dim", type=int, default=32)
    ap.add_argument("--settings", nargs="+", default=["5way5shot", "10way10shot"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_data(datasets=("FewAsp(single)",))
    out = {"load_seconds": round(time.perf_counter() - t0, 2), "threads": args.threads,
           "loadavg_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "results": {}}
    train_split, train_enc = data.splits[("FewAsp(single)", "train")], data.encoded[("FewAsp(single)", "train")]
    test_split, test_enc = data.splits[("FewAsp(single)", "test")], data.encoded[("FewAsp(single)", "test")]
    cfg = ACDConfig(settings=args.settings, seeds=[0], hidden=args.hidden, attn_dim=args.attn_dim)
    for arch in ("protonet", "proto_awatt"):
        for setting in args.settings:
            n, k = parse_setting(setting)
            model = _new_model(arch, cfg, data, 0)
            train_model(model, train_split, train_enc, shapes=[(n, k)], n_query=5, n_episodes=3, lr=1e-3,
                        rng=np.random.default_rng(0))  # warm-up
            t = time.perf_counter()
            train_model(model, train_split, train_enc, shapes=[(n, k)], n_query=5, n_episodes=args.episodes, lr=1e-3,
                        rng=np.random.default_rng(1))
            train_rate = args.episodes / (time.perf_counter() - t)
            eps = sample_episodes(test_split, args.episodes, n_way=n, k_shot=k, n_query=5, rng=np.random.default_rng(2))
            t = time.perf_counter()
            bank = encode_bank(model.encoder, test_enc)
            bank_s = time.perf_counter() - t
            t = time.perf_counter()
            score_episodes(model, eps, bank)
            eval_rate = args.episodes / (time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                for ep in eps:
                    b = episode_tensors(ep, test_enc, "cpu")
                    model(b["support_ids"], b["support_mask"], b["query_ids"], b["query_mask"], n_way=n, k_shot=k)
            direct_rate = args.episodes / (time.perf_counter() - t)
            out["results"].setdefault(arch, {})[setting] = {
                "train_eps_per_s": round(train_rate, 2), "eval_eps_per_s": round(eval_rate, 2),
                "bank_seconds": round(bank_s, 2), "eval_direct_eps_per_s": round(direct_rate, 2)}
    out["loadavg_1min_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
