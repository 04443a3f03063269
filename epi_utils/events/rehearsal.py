"""CPU rehearsal of Study 04's gpu profile (``epi run ... --profile gpu --rehearse``).

The gpu profile reads Doc2EDAG's full ChFinAnn release (``train.json``/``dev.json``/``test.json``)
and encodes characters with a Chinese pretrained BERT-family encoder (``hf_encoder``, loaded with
``from_pretrained``). The rehearsal prepares a toy config and toy data and runs the *same*
:func:`.study.run_study` on them: 8 synthetic documents per split in the release's layout (JSON
arrays of ``[doc_id, doc]`` with Doc2EDAG's fields, read through :func:`.prepare.prepare_data` with
``split_files``), a *random-initialised* tiny model of the encoder's family
(:func:`epi_utils.workbench.rehearsal.tiny_model_config`) with a character tokenizer, loaded with
``from_pretrained`` from a local folder, one epoch of every stage, one seed unit, a small synthetic
check. Then it estimates the full run's GPU memory and GPU-hours with
:func:`epi_utils.workbench.rehearsal.estimate` and attaches it as ``result.estimate``.
"""
from __future__ import annotations

import json
import math
import resource
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from epi_utils.events.config import EventConfig
from epi_utils.events.prepare import SCHEMA_DIR, PreparedData, prepare_data
from epi_utils.events.schema import load_schema
from epi_utils.events.study import Result, run_study
from epi_utils.events.synthetic import generate_documents
from epi_utils.workbench import progress as progress_mod
from epi_utils.workbench import rehearsal as wr

#: Doc2EDAG's full ChFinAnn release: documents per split (Zheng et al., EMNLP 2019, Table 1).
FULL_SPLITS = {"train": 25632, "dev": 3204, "test": 3204}
#: mean characters per document kept at 64 sentences (measured on the 1,424 local ChFinAnn documents: 1,154).
CHARS_PER_DOC = 1200
#: the encoder family rehearsed when the profile names none
DEFAULT_MODEL = "bert-base-chinese"
SPLIT_FILES = ("train.json", "dev.json", "test.json")


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


def prepare_toy(cfg: EventConfig, folder: Path) -> tuple[EventConfig, PreparedData]:
    """The toy config and data of a rehearsal of ``cfg``: local samples in the release's layout, a
    tiny encoder of ``cfg.hf_encoder``'s family (:data:`DEFAULT_MODEL` when empty), one epoch of
    every stage, one seed unit, no learning-rate grid, no ladder, a 40-document synthetic check."""
    folder = Path(folder)
    data_dir = write_samples(folder, seed=cfg.seed)
    data = prepare_data(data_dir, data_dir / "chfinann_event_schema.json", split_seed=cfg.seed, split_files=SPLIT_FILES,
                        max_sentences=cfg.max_sentences, max_sentence_chars=cfg.max_sentence_chars, reach_limits=())
    chars = {c for docs in data.cut.values() for d in docs for s in d.sentences for c in s}
    local = tiny_encoder(cfg.hf_encoder or DEFAULT_MODEL, folder / "tiny_model", chars)
    toy = cfg.replace(hf_encoder=str(local), device="cpu", data_source="real", split_files=list(SPLIT_FILES),
                      enc_epochs=1, dec_epochs=1, enc_epoch_steps=0, dec_epoch_steps=0, eval_every=1, encoder_seeds=1, decoder_seeds=1, dec_lr_grid=(),
                      frontend_steps=False, synthetic_docs=40, synthetic_enc_epochs=1, synthetic_dec_epochs=1,
                      num_threads=1)
    return toy, data


def estimate_full_scale(cfg: EventConfig, result: Result, *, chars_per_doc: int = CHARS_PER_DOC) -> dict:
    """The full-scale estimate of ``cfg`` from the toy run ``result`` (the ``rehearsal`` entry of metrics.json).

    Encoder: :data:`FULL_SPLITS` documents of ``chars_per_doc`` characters, cut into windows of
    ``cfg.max_sentence_chars``; encoder tokens = ``enc_epochs x encoder_seeds`` passes over the train
    split (plus the per-epoch dev check and the feature passes as forward tokens); the toy encoder's
    seconds (one epoch, dev check and feature extraction included) as the measured step. The stage-2
    decoders (small models on frozen features, bound by per-document Python work -- alignment,
    targets -- rather than by the GPU) are costed separately: documents x epochs x decoders at the
    seconds per training document and epoch of the toy's first decoder on one CPU core (dev checks
    and full-width matrices included: an upper bound of the per-document work).
    """
    toy, data = result.config, result.data
    enc = result.records.encoders[0]
    n_train = len(data.cut["train"])
    measured = wr.Meter(seconds=enc.seconds, steps=max(1, math.ceil(n_train / toy.enc_batch)) * toy.enc_epochs,
                        tokens=sum(len("".join(d.sentences)) for d in data.cut["train"]) * toy.enc_epochs,
                        peak_host_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    per_doc = result.records.decoders[0].seconds / (n_train * max(1, toy.dec_epochs))
    n_dec = len(cfg.methods) * (cfg.encoder_seeds * cfg.decoder_seeds + max(0, len(cfg.dec_lr_grid) - 1))
    decoders = {"decoders_trained": n_dec, "python_seconds_per_doc_epoch": per_doc,
                "hours": n_dec * cfg.dec_epochs * FULL_SPLITS["train"] * per_doc / 3600}
    per_pass = FULL_SPLITS["train"] * chars_per_doc
    windows = math.ceil(chars_per_doc / cfg.max_sentence_chars)
    eval_chars = (FULL_SPLITS["dev"] * (cfg.enc_epochs + 2) + FULL_SPLITS["test"] * 2 + FULL_SPLITS["train"]) * chars_per_doc
    est = wr.estimate(model_id=cfg.hf_encoder or DEFAULT_MODEL, train_tokens=cfg.enc_epochs * cfg.encoder_seeds * per_pass,
                      forward_tokens=cfg.encoder_seeds * eval_chars, micro_batch=cfg.enc_batch * windows,
                      seq_len=cfg.max_sentence_chars + 2, measured=measured)
    return {**est.to_dict(), "decoders": decoders,
            "toy": {"documents_per_split": n_train, "enc_epochs": toy.enc_epochs, "dec_epochs": toy.dec_epochs,
                    "synthetic_docs": toy.synthetic_docs}}


def rehearse(cfg: EventConfig, *, progress: Callable = progress_mod.progress) -> Result:
    """Run ``cfg``'s code path on toy data (:func:`prepare_toy`) through :func:`.study.run_study` and
    attach :func:`estimate_full_scale` as ``result.estimate``."""
    with tempfile.TemporaryDirectory() as tmp:
        toy, data = prepare_toy(cfg, Path(tmp))
        result = run_study(toy, progress=progress, data=data)
    result.estimate = estimate_full_scale(cfg, result)
    d = result.estimate["decoders"]
    progress_mod.log_line(f"stage-2 decoders: {d['decoders_trained']} x {cfg.dec_epochs} epochs x {FULL_SPLITS['train']} "
                          f"documents at {d['python_seconds_per_doc_epoch'] * 1000:.1f} ms of per-document work each: "
                          f"{d['hours']:.2f} hours on the GPU machine")
    return result
