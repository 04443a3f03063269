"""Documents per second for Study 04: masked-character pretraining, stage-1 encoder training,
stage-2 decoder training (probes and no-probe), and end-to-end inference from the union candidates,
on real ChFinAnn documents (or synthetic ones if the data folder is missing).

Usage: ``python benchmarks/bench_events.py [--docs 200] [--threads 1]``; prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from epi_utils.events import prepare
from epi_utils.events.config import EventConfig
from epi_utils.events.frontend import extract_features, train_encoder
from epi_utils.events.methods import variants_for
from epi_utils.events.training import decode, train_decoder
from epi_utils.workbench import runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=200, help="training documents timed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--candidates", default="union", choices=["gold", "predicted", "rules", "union"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the notebook's cpu defaults, one epoch of each stage
    cfg = EventConfig(enc_layers=1, max_sentences=48, pretrain_epochs=1, enc_epochs=1, dec_epochs=1, dec_batch=32,
                      num_probes=6, candidates=args.candidates, eval_every=100)
    folder = runs.data_dir() / "docee" / "chfinann"
    if folder.exists():
        data = prepare.prepare_data(folder, folder / "chfinann_event_schema.derived.json", split_seed=0,
                                  max_sentences=cfg.max_sentences, max_sentence_chars=cfg.max_sentence_chars)
        source = "chfinann"
    else:
        data = prepare.synthetic_data(prepare.load_schema(prepare.SCHEMA_DIR / "chfinann_event_schema.json"),
                                    n_docs=args.docs * 2, seed=0, max_sentences=cfg.max_sentences,
                                    max_sentence_chars=cfg.max_sentence_chars)
        source = "synthetic"
    train, test = data.cut["train"][:args.docs], data.cut["test"][:args.docs]
    out = {"source": source, "docs": len(train), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0]}
    t0 = time.perf_counter()
    train_encoder(train, data.schema, cfg.replace(enc_epochs=0), seed=0, unlabeled=train)
    out["pretrain_docs_per_s"] = len(train) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    enc = train_encoder(train, data.schema, cfg.replace(pretrain_epochs=0), seed=0)
    out["encoder_train_docs_per_s"] = len(train) / (time.perf_counter() - t0)
    f_train = extract_features(enc, train, data.schema, candidates="union", add_gold=True, min_mention_chars=3)
    for v in variants_for(("probes", "no_probe")):
        t0 = time.perf_counter()
        dec, _ = train_decoder(f_train, data.schema, v, cfg, seed=0, d_in=enc.dim, num_fields=len(enc.labels))
        out[f"decoder_train_docs_per_s_{v.name}"] = len(train) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        feats = extract_features(enc, test, data.schema, candidates=cfg.candidates, min_mention_chars=3)
        decode(dec, feats, data.schema, cfg)
        out[f"inference_docs_per_s_{v.name}"] = len(test) / (time.perf_counter() - t0)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
