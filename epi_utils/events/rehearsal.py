"""CPU rehearsal of Study 04's gpu profile (``epi run ... --profile gpu --rehearse``).

The gpu profile reads Doc2EDAG's full ChFinAnn release (``train.json``/``dev.json``/``test.json``)
and encodes characters with a Chinese pretrained BERT-family encoder (``hf_encoder``, loaded with
``from_pretrained``). The rehearsal runs the same code on the CPU at toy scale: it writes 8
synthetic documents per split in the release's layout (JSON arrays of ``[doc_id, doc]`` with
Doc2EDAG's fields) and a *random-initialised* tiny model of the encoder's family
(:func:`epi_utils.workbench.rehearsal.tiny_model_config`) with a character tokenizer into a local
folder, loads both through the profile's path (:func:`.study.prepare_data` with ``split_files``,
``from_pretrained`` on the folder), times a few encoder and decoder steps, and estimates the full
run's GPU memory and GPU-hours with :func:`epi_utils.workbench.rehearsal.estimate`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from epi_utils.events.config import EventConfig
from epi_utils.events.frontend import extract_features, train_encoder
from epi_utils.events.methods import variants_for
from epi_utils.events.schema import load_schema
from epi_utils.events.study import SCHEMA_DIR, prepare_data
from epi_utils.events.synthetic import generate_documents
from epi_utils.events.training import decode, train_decoder
from epi_utils.workbench import rehearsal as wr

#: Doc2EDAG's full ChFinAnn release: documents per split (Zheng et al., EMNLP 2019, Table 1).
FULL_SPLITS = {"train": 25632, "dev": 3204, "test": 3204}
#: mean characters per document kept at 64 sentences (measured on the 1,424 local ChFinAnn documents: 1,154).
CHARS_PER_DOC = 1200


def write_samples(folder: Path, *, n: int = 8, seed: int = 0) -> Path:
    """``n`` synthetic documents per split in the release's layout under ``folder/chfinann``, with
    the shipped ChFinAnn schema beside them; returns the folder."""
    schema_path = SCHEMA_DIR / "chfinann_event_schema.json"
    schema = load_schema(schema_path)
    out = Path(folder) / "chfinann"
    out.mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(FULL_SPLITS):
        raw = generate_documents(schema, n_docs=n, rng=np.random.default_rng(seed + k), max_events=3, id_prefix=split)
        (out / f"{split}.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    (out / schema_path.name).write_text(schema_path.read_text(encoding="utf-8"), encoding="utf-8")
    return out


def tiny_encoder(model_id: str, folder: Path, chars) -> Path:
    """A random-initialised tiny model of ``model_id``'s family and a character tokenizer, saved to
    ``folder`` (loadable with ``from_pretrained``)."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(chars))
    (folder / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    tf.BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=False).save_pretrained(folder)
    tf.AutoModel.from_config(wr.tiny_model_config(model_id, vocab_size=len(vocab))).save_pretrained(folder)
    return folder


def rehearse(cfg: EventConfig, *, model_id: str, folder: Path, steps: int = 3, seed: int = 0,
             chars_per_doc: int = CHARS_PER_DOC) -> tuple[wr.Estimate, dict]:
    """Run ``cfg``'s code path with a tiny ``model_id`` stand-in and local samples; return the
    encoder's estimate and ``decoders``: the stage-2 hours at the measured per-document rate.

    Full-scale sizes: :data:`FULL_SPLITS` documents of ``chars_per_doc`` characters, cut into windows
    of ``cfg.max_sentence_chars``; encoder tokens = ``enc_epochs x encoder_seeds`` passes over the train
    split (plus the per-epoch dev check and the feature passes as forward tokens). The stage-2
    decoders (small models on frozen features, bound by per-document Python work -- alignment,
    targets -- rather than by the GPU) are costed separately: documents x epochs x decoders at the
    seconds per document of a 16-wide decoder measured here on one CPU core.
    """
    folder = Path(folder)
    data_dir = write_samples(folder, seed=seed)
    data = prepare_data(data_dir, data_dir / "chfinann_event_schema.json", split_seed=seed,
                        split_files=("train.json", "dev.json", "test.json"), max_sentences=cfg.max_sentences,
                        max_sentence_chars=cfg.max_sentence_chars, reach_limits=())
    chars = {c for docs in data.cut.values() for d in docs for s in d.sentences for c in s}
    local = tiny_encoder(model_id, folder / "tiny_model", chars)
    tcfg = cfg.replace(hf_encoder=str(local), device="cpu", enc_epochs=1, dec_epochs=1, eval_every=1,
                       encoder_seeds=1, decoder_seeds=1, dec_lr_grid=())
    with wr.meter() as m:
        enc = train_encoder(data.cut["train"], data.schema, tcfg, seed=seed, max_steps=steps)
        m.steps = min(steps, math.ceil(len(data.cut["train"]) / tcfg.enc_batch))
        m.tokens = sum(len("".join(d.sentences)) for d in data.cut["train"][:m.steps * tcfg.enc_batch])
    kw = {"min_mention_chars": cfg.min_mention_chars}
    f_train = extract_features(enc, data.cut["train"], data.schema, candidates="union", add_gold=True, **kw)
    f_dev = extract_features(enc, data.cut["dev"], data.schema, candidates=cfg.candidates, **kw)
    import time
    variant = variants_for(cfg.methods[:1])[0]
    # the decoders' time on a GPU is bound by the per-document Python work (alignment, targets), not by
    # their small matrices: timed with a 16-wide one-layer decoder (warm-up step, then 2 steps of 4 documents)
    small = tcfg.replace(dec_batch=4, hidden=16, heads=2, dec_layers=1)
    train_decoder(f_train, data.schema, variant, small, seed=seed, d_in=enc.dim, num_fields=len(enc.labels), max_steps=1)
    t0 = time.perf_counter()
    dec, _ = train_decoder(f_train, data.schema, variant, small, seed=seed, d_in=enc.dim, num_fields=len(enc.labels),
                           max_steps=2)
    per_doc = (time.perf_counter() - t0) / min(len(f_train), 2 * small.dec_batch)
    decode(dec, f_dev, data.schema, tcfg)
    n_dec = len(cfg.methods) * (cfg.encoder_seeds * cfg.decoder_seeds + max(0, len(cfg.dec_lr_grid) - 1))
    decoders = {"decoders_trained": n_dec, "python_seconds_per_doc_epoch": per_doc,
                "hours": n_dec * cfg.dec_epochs * FULL_SPLITS["train"] * per_doc / 3600}
    per_pass = FULL_SPLITS["train"] * chars_per_doc
    windows = math.ceil(chars_per_doc / cfg.max_sentence_chars)
    eval_chars = (FULL_SPLITS["dev"] * (cfg.enc_epochs + 2) + FULL_SPLITS["test"] * 2 + FULL_SPLITS["train"]) * chars_per_doc
    est = wr.estimate(model_id=model_id, train_tokens=cfg.enc_epochs * cfg.encoder_seeds * per_pass,
                      forward_tokens=cfg.encoder_seeds * eval_chars, micro_batch=cfg.enc_batch * windows,
                      seq_len=cfg.max_sentence_chars + 2, measured=m)
    print(f"stage-2 decoders: {n_dec} x {cfg.dec_epochs} epochs x {FULL_SPLITS['train']} documents at "
          f"{per_doc * 1000:.1f} ms of per-document Python work each: {decoders['hours']:.2f} hours on the GPU machine")
    return est, decoders
