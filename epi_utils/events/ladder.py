"""The front-end ladder (profile ``cpu-long``): what each part of the entity front end adds.

One encoder and one probe decoder per rung, each rung stating all three switches whatever the
study's own settings: a character Transformer without pretraining, + masked-character pretraining,
+ a residual BiLSTM; the study's own encoder (+ hashed character bigrams by default) is the last
row, read from the main run's records. Every rung is scored on dev mention P/R/F1 and end-to-end
test micro F1 per candidate set (:func:`.summary.frontend_table`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from epi_utils.events.config import EventConfig
from epi_utils.events.design import DecoderRecord, EncoderRecord, Records, frontend_step, silent
from epi_utils.events.prepare import PreparedData
from epi_utils.workbench.progress import log_line


@dataclass
class Rung:
    """One row group of the ladder: its name, its encoder and the decoders scored on its candidate sets."""

    step: str
    encoder: EncoderRecord
    decoders: list[DecoderRecord] = field(default_factory=list)
    seconds: float = 0.0


def ladder_changes(cfg: EventConfig) -> list[tuple[str, dict]]:
    """The trained rungs as (name, config changes); pretraining passes ``max(cfg.pretrain_epochs, 1)``."""
    pt = max(cfg.pretrain_epochs, 1)
    return [("Transformer (no pretraining, no BiLSTM, no bigrams)", dict(pretrain_epochs=0, enc_lstm=False, bigram_buckets=0)),
            ("+ masked-character pretraining", dict(pretrain_epochs=pt, enc_lstm=False, bigram_buckets=0)),
            ("+ BiLSTM", dict(pretrain_epochs=pt, enc_lstm=True, bigram_buckets=0))]


def ladder_applies(cfg: EventConfig) -> bool:
    """The ladder is trained with ``cfg.frontend_steps`` on real data with the character encoder
    (a Hugging Face encoder has no character front end to take apart)."""
    return cfg.frontend_steps and cfg.data_source == "real" and not cfg.hf_encoder


def study_rung(cfg: EventConfig, records: Records) -> Rung:
    """The study's own encoder as the ladder's last row: the first encoder of the main run and the
    decoders of ``cfg.methods[0]`` trained on it."""
    first = records.encoders[0]
    name = (f"study encoder ({cfg.hf_encoder})" if cfg.hf_encoder else
            f"study encoder (pretraining epochs {cfg.pretrain_epochs}, BiLSTM {'on' if cfg.enc_lstm else 'off'}, "
            f"bigram buckets {cfg.bigram_buckets})")
    return Rung(name, first, [d for d in records.decoders if d.method == cfg.methods[0] and d.encoder_seed == first.encoder_seed])


def run_ladder(data: PreparedData, cfg: EventConfig, records: Records, *, progress: Callable = silent,
               log: Callable[[str], None] | None = log_line) -> list[Rung]:
    """The trained rungs (when :func:`ladder_applies`; each with seed ``cfg.seed`` and the plain
    ``dec_lr``) followed by :func:`study_rung`."""
    rungs = []
    todo = ladder_changes(cfg) if ladder_applies(cfg) else []
    for step, change in progress(todo, desc="study 04 front-end ladder", unit="rung"):
        t0 = time.perf_counter()
        e, ds = frontend_step(data, cfg.replace(dec_lr_grid=(), **change), step=step, seed=cfg.seed, log=log)
        rungs.append(Rung(step, e, ds, time.perf_counter() - t0))
    return rungs + [study_rung(cfg, records)]
