"""GPU rehearsal of Study 05 (``epi run notebooks/05_fewshot_acd.ipynb --profile gpu --rehearse``).

The gpu profile fine-tunes a BERT encoder (``model_id``, ``bert-base-uncased``) under ProtoNet and
Proto-AWATT. The rehearsal runs the same code on the CPU at toy scale: a tiny random-initialised
BERT (``workbench.rehearsal.tiny_model_config``, the real uncased WordPiece vocabulary of the
offline MiniLM tokenizer), a local FewAsp(single) copy of 8 synthetic sentences per class in the
real file layout (``{category: [[tokens, aspects], ...]}`` + ``separate.json``), one short
seed x setting through the same :func:`~epi_utils.acd.study.run_study` (training with early
stopping and the joint policy, thresholds, scoring), timed by ``workbench.rehearsal.meter``. Then
:func:`estimate_full_scale` feeds the gpu profile's full sizes to ``workbench.rehearsal.estimate``;
:func:`rehearse` does all of it and returns the toy run's :class:`~epi_utils.acd.study.Result` with
the estimate attached as ``result.estimate``.

Full-scale token counts (assumptions, stated in the estimate): every training episode is one
batch of ``N*(K+Q)`` sentences padded to :data:`SEQ_LEN` WordPieces; every epoch runs all
``max_epochs`` (early stopping only shortens it); see :func:`full_scale_tokens`.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from epi_utils.acd.config import Config, parse_setting
from epi_utils.acd.encoders import minilm_tokenizer
from epi_utils.acd.study import Result, run_study
from epi_utils.acd.training import ACDData, load_data
from epi_utils.workbench.progress import progress
from epi_utils.workbench.rehearsal import estimate, meter, tiny_model_config

#: padded WordPiece length of an episode batch (FewAsp sentences: mean 16-24 words, max 99).
SEQ_LEN = 64
#: sentences per split of the full data (SOURCE.md of the shared copy; train of multi/FewAsp: instances).
FULL_SENTENCES = {("FewAsp(single)", "train"): 12800, ("FewAsp(single)", "val"): 3200, ("FewAsp(single)", "test"): 4000,
                  ("FewAsp(multi)", "train"): 25600, ("FewAsp(multi)", "val"): 6261, ("FewAsp(multi)", "test"): 7809,
                  ("FewAsp", "train"): 40320, ("FewAsp", "val"): 9899, ("FewAsp", "test"): 12383}
#: sentences per class of the toy copy (the held-out half must still fill an episode's K + Q per class)
TOY_PER_CLASS = 12
_WORDS = ["the", "food", "was", "great", "staff", "friendly", "room", "clean", "price", "too", "high", "pool",
          "nice", "service", "slow", "music", "loud", "bed", "comfy", "parking", "easy", "view", "amazing"]


@dataclass
class Rehearsal:
    """The full-scale config, the toy config and data that run instead, and the tiny backbone factory."""

    full: Config
    toy: Config
    data: ACDData
    backbone: Callable
    root: Path


def write_toy_fewasp(folder: Path | str, *, per_class: int = 8, seed: int = 0) -> Path:
    """A FewAsp root with FewAsp(single)/{train,val,test}.json (6/4/4 classes, ``per_class``
    single-label sentences each) and separate.json, in the real layout; returns the root."""
    root = Path(folder)
    rng = np.random.default_rng(seed)
    classes = {"train": [f"train_{i}" for i in range(6)], "val": [f"val_{i}" for i in range(4)],
               "test": [f"test_{i}" for i in range(4)]}
    (root / "FewAsp(single)").mkdir(parents=True, exist_ok=True)
    (root / "separate.json").write_text(json.dumps({"train": classes["train"], "validation": classes["val"],
                                                     "test": classes["test"]}))
    for split, names in classes.items():
        obj = {c: [[[c.replace("_", " ").split()[0], c[-1]] + list(rng.choice(_WORDS, 6)), [c]]
                   for _ in range(per_class)] for c in names}
        (root / "FewAsp(single)" / f"{split}.json").write_text(json.dumps(obj))
    return root


def prepare(cfg: Config, folder: Path | str) -> Rehearsal:
    """Toy config (one seed, ``3way2shot``, Q=2, 4 episodes x 2 epochs, ProtoNet and Proto-AWATT,
    FewAsp(single) as tuning and test set, CPU), local data and the tiny random BERT factory for a
    rehearsal of ``cfg``. Raises ``ValueError`` unless ``cfg.encoder == "bert"`` (the gpu
    profile's encoder)."""
    if cfg.encoder != "bert":
        raise ValueError(f"the GPU rehearsal of study 05 rehearses the BERT encoder; encoder is {cfg.encoder!r} "
                         "(set encoder: bert in the gpu profile)")
    from transformers import AutoModel

    root = write_toy_fewasp(Path(folder) / "fewasp", per_class=TOY_PER_CLASS)
    tok = minilm_tokenizer()  # uncased WordPiece, the vocabulary of bert-base-uncased
    toy = cfg.replace(settings=["3way2shot"], n_seeds=1, n_query=2, archs=["protonet", "proto_awatt"], train_episodes=4,
                      max_epochs=2, patience=1, tune_on="FewAsp(single)", holdout=0.5, val_episodes=2,
                      select_episodes=2, test_episodes=3, eval_datasets=["FewAsp(single)"], hidden=32, attn_dim=16,
                      policy_max_epochs=2, policy_patience=1, device="cpu", num_threads=1)
    data = load_data(root=root, datasets=("FewAsp(single)",), encoder="bert", tokenizer=tok)
    config = tiny_model_config(cfg.model_id, vocab_size=tok.vocab_size)
    return Rehearsal(full=cfg, toy=toy, data=data, backbone=lambda: AutoModel.from_config(config), root=root)


def full_scale_tokens(cfg: Config) -> dict[str, float]:
    """Training and forward-only WordPiece tokens, and the largest episode batch, of ``cfg`` at full
    scale: every architecture trains on FewAsp(single) train; the joint policy adds one forward
    episode per training episode; validation encodes the held-out share of ``tune_on``'s validation
    split once per epoch; evaluation encodes that split and every test split once per model."""
    shapes = [parse_setting(s) for s in cfg.settings]
    groups = [shapes] if cfg.shared_training else [[s] for s in shapes]
    tune = FULL_SENTENCES[(cfg.tune_on, "val")]
    train = forward = 0.0
    for group in groups:
        per_episode = np.mean([n * (k + cfg.n_query) for n, k in group])
        models = len(cfg.archs) * cfg.n_seeds
        train += models * cfg.max_epochs * cfg.train_episodes * per_episode * SEQ_LEN
        forward += cfg.n_seeds * cfg.max_epochs * cfg.train_episodes * per_episode * SEQ_LEN  # joint policy
        forward += models * cfg.max_epochs * cfg.holdout * tune * SEQ_LEN
        forward += models * (tune + sum(FULL_SENTENCES[(d, "test")] for d in cfg.eval_datasets)) * SEQ_LEN
    return {"train_tokens": float(train), "forward_tokens": float(forward),
            "micro_batch": int(max(n * (k + cfg.n_query) for n, k in shapes))}


def estimate_full_scale(r: Rehearsal, measured) -> dict:
    """``workbench.rehearsal.estimate`` for ``r.full`` with the rehearsal's :class:`Meter`; returns
    the estimate's dict plus ``toy`` (what ran) -- the ``rehearsal`` entry of metrics.json."""
    sizes = full_scale_tokens(r.full)
    est = estimate(model_id=r.full.model_id, train_tokens=sizes["train_tokens"], forward_tokens=sizes["forward_tokens"],
                   micro_batch=sizes["micro_batch"], seq_len=SEQ_LEN, measured=measured)
    return {**est.to_dict(), "toy": {"settings": list(r.toy.settings), "train_episodes": r.toy.train_episodes,
                                     "max_epochs": r.toy.max_epochs, "sentences_per_class": TOY_PER_CLASS}}


def rehearse(cfg: Config, *, progress: Callable = progress, folder: Path | str | None = None) -> Result:
    """Rehearse ``cfg`` (the gpu profile) on the CPU: :func:`prepare` the toy config and data, run the
    same :func:`~epi_utils.acd.study.run_study` on them under ``meter`` and attach
    :func:`estimate_full_scale` as ``result.estimate``. ``folder``: where the toy FewAsp copy is
    written (default: a temporary folder, removed afterwards; the data is loaded before that)."""
    with tempfile.TemporaryDirectory(prefix="acd-rehearsal-") as tmp:
        reh = prepare(cfg, folder if folder is not None else tmp)
        with meter() as measured:
            result = run_study(reh.toy, progress=progress, data=reh.data, backbone=reh.backbone)
            measured.steps = sum(len(r.epoch_seconds) * r.episodes_per_epoch for r in result.training)
    result.estimate = estimate_full_scale(reh, measured)
    return result
