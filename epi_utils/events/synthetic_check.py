"""The synthetic sanity check: planted records in documents of the study's schema must be recovered.

Synthetic documents (:mod:`.synthetic`: each record one sentence with a type marker and role
markers, some arguments shared) for the run's schema, truncated to at most 24 sentences. The probe
method is trained without pretraining or dropout on the annotated mentions and decoded from them
(bar: micro F1 >= :data:`BAR`), and end to end from the NER head's candidates (reported as measured).
The check reads only the documents and their annotations; the generator's planted fields never
reach training or decoding beyond the annotations a user's data would carry.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from epi_utils.events.config import EventConfig
from epi_utils.events.design import ANNOTATED, Records, run_design, silent
from epi_utils.events.prepare import synthetic_data
from epi_utils.events.schema import EventSchema

BAR = 0.95   # micro F1 from the annotated mentions the check must reach


@dataclass
class SyntheticCheck:
    """The check's numbers and whether the bar was passed."""

    n_test: int
    micro_f1: float                 # decoded from the annotated mentions
    multi_recall: float
    end_to_end_micro_f1: float      # decoded from the NER head's candidates
    dev_mention_f1: float           # of the NER head
    passed: bool
    seconds: float
    schema_name: str = ""
    twin_types: tuple = ()          # groups of types with identical role lists (only the type cue separates them)

    def to_dict(self) -> dict:
        return {"micro_f1": self.micro_f1, "multi_recall": self.multi_recall, "passed": self.passed,
                "end_to_end_micro_f1": self.end_to_end_micro_f1}

    def describe(self) -> str:
        twins = "; ".join(" / ".join(g) for g in self.twin_types)
        head = (f"data set: {self.schema_name}, its schema" + (f" (types with identical role lists, told apart only by their type "
                                                  f"marker: {twins})" if twins else "") + "\n") if self.schema_name else ""
        return head + (f"synthetic ({self.n_test} test documents), from annotated mentions: micro F1 {self.micro_f1:.3f}, "
                f"multi-event recall {self.multi_recall:.3f}; bar {BAR} {'passed' if self.passed else 'NOT passed'}\n"
                f"end to end from NER-head candidates: micro F1 {self.end_to_end_micro_f1:.3f} "
                f"(dev mention F1 {self.dev_mention_f1:.3f})")


def check_config(cfg: EventConfig) -> EventConfig:
    """The check's config: the study's model sizes, ``synthetic_*`` epochs and batch as a fixed schedule
    (no plateau stop and no step-sized epochs; the decoder's learning rate decays by a cosine over its epochs, the best dev
    checkpoint kept: with the plateau schedule's constant rate it reached 0.935-0.940, under the bar), no pretraining,
    no dropout, annotated candidates for training and test, the probe method, one seed unit."""
    return cfg.replace(enc_epochs=cfg.synthetic_enc_epochs, dec_epochs=cfg.synthetic_dec_epochs, enc_epoch_steps=0, dec_epoch_steps=0,
                       enc_patience=cfg.synthetic_enc_epochs, dec_patience=cfg.synthetic_dec_epochs, dec_lr_decay=True,
                       dec_batch=cfg.synthetic_dec_batch, pretrain_epochs=0, dropout=0.0, candidates="gold",
                       train_candidates="gold", methods=("probes",),
                       encoder_seeds=1, decoder_seeds=1, dec_lr_grid=())


def run_check(schema: EventSchema, cfg: EventConfig, *, name: str = "") -> tuple[SyntheticCheck, Records]:
    """Run the check for ``schema`` (``cfg.synthetic_docs`` documents, seed ``cfg.seed``); ``name``: the
    data set's name in the description."""
    t0 = time.perf_counter()
    syn = synthetic_data(schema, n_docs=cfg.synthetic_docs, seed=cfg.seed, max_sentences=min(cfg.max_sentences, 24),
                         max_sentence_chars=cfg.max_sentence_chars, min_events=1, max_events=3, share_prob=0.3)
    records = run_design(syn, check_config(cfg), progress=silent, log=lambda line: None, extra_candidates=("predicted",))
    scores = records.rows(candidates=ANNOTATED)[0].scores
    e2e = records.rows(candidates="predicted")[0].scores
    ner = records.encoders[0].mention["predicted"]
    check = SyntheticCheck(len(syn.full["test"]), scores["micro_f1"], scores["multi_recall"], e2e["micro_f1"], ner["f1"],
                           scores["micro_f1"] >= BAR, time.perf_counter() - t0,
                           name or schema.name, tuple(schema.twin_types()))
    return check, records

