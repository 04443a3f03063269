"""Study 04's one configuration: the data, the pipeline's options and the design of the study.

Every field is declared once, with its default (the ``cpu`` profile) and help text, by
:func:`~epi_utils.workbench.contract.option`; the notebook's parameters cell is generated from it
(``epi params notebooks/04_event_probes.ipynb --sync``). A bad value raises
:class:`~epi_utils.workbench.contract.ConfigError` naming ``EventConfig.<field>`` and the value.
"""
from __future__ import annotations

from dataclasses import dataclass

from epi_utils.workbench.contract import StudyConfig, option

CANDIDATES = ("predicted", "rules", "union", "gold")   # test-time candidate sets (see frontend.extract_features)
TRAIN_CANDIDATES = ("gold", "union")                  # decoder training candidates
THRESHOLDS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)     # record-existence thresholds tried on dev
#: least train precision a candidate rule pattern needs (None: user patterns only), tried on dev
RULE_GATES = (None, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.0)
METHODS = ("probes", "no_probe", "probes_no_extra_losses", "no_probe_extra_losses",
           "wo_alignment", "wo_role_contrastive", "wo_probe_consistency")
DATA_SOURCES = ("real", "synthetic")
ON_ERROR = ("skip", "raise")


@dataclass(frozen=True)
class EventConfig(StudyConfig):
    """Every option of the data, the pipeline (stage 1 front end, stage 2 decoders) and the design."""

    # data
    data_source: str = option("real", "real (Doc2EDAG-layout files under EPI_DATA_DIR) | synthetic (planted records)",
                              choices=DATA_SOURCES)
    data_subdir: str = option("docee/chfinann", "folder under EPI_DATA_DIR with the documents")
    schema_file: str = option("chfinann_event_schema.derived.json",
                              "schema file in data_subdir (or shipped in events/schemas)")
    synthetic_schema: str = option("chfinann_event_schema.json", "shipped schema (events/schemas) of data_source synthetic "
                                   "(transfer_demo_schema.json: the worked transfer example)")
    split_files: list[str] = option([], "three files (train, dev, test) holding the split; empty: seeded split of the folder",
                                    unique=True)
    limit_docs: int = option(0, "keep only the first N documents (0 keeps all)", ge=0)
    split_seed: int = option(0, "seed of the train/dev/test division", ge=0, lt=2**31)
    on_error: str = option("skip", "malformed documents: skip (and count) | raise", choices=ON_ERROR)
    max_sentences: int = option(48, "sentences kept per document (reachable test arguments printed for 24/48/64)", ge=1)
    max_sentence_chars: int = option(128, "characters kept per sentence", ge=1)
    # stage 1: encoder, NER head, type detector
    dim: int = option(64, "stage-1 encoder hidden size", ge=1)
    enc_lstm: bool = option(True, "residual BiLSTM over the character Transformer (its gain: front-end ladder, profile cpu-long)")
    bigram_buckets: int = option(65536, "hashed character-bigram embedding buckets, 0 for none (gain: front-end ladder)",
                                 ge=0)
    enc_layers: int = option(1, "stage-1 Transformer layers", ge=1)
    heads: int = option(4, "attention heads", ge=1)
    dropout: float = option(0.1, "dropout in encoder and decoder", ge=0, lt=1)
    pretrain_epochs: int = option(0, "masked-character pretraining passes over every document's text (0: none; it bought "
                                     "nothing on the front-end ladder of run 20261204-153305-cpu-long-4241)", ge=0)
    pretrain_lr: float = option(0.002, "pretraining peak learning rate", gt=0)
    enc_epochs: int = option(6, "most stage-1 epochs (NER head + type detector; one-cycle learning rate over them, stops "
                                "at a dev mention F1 plateau, best epoch kept)", ge=0)
    enc_epoch_steps: int = option(125, "a scheduled stage-1 epoch is at least this many optimiser steps: on a smaller data "
                                       "set enc_epochs and enc_patience count groups of passes (125: one pass over "
                                       "ChFinAnn's 997 training documents; 0: plain passes)", ge=0)
    enc_patience: int = option(2, "stage-1 epochs without a better dev mention F1 before stopping", ge=1)
    enc_lr: float = option(0.003, "stage-1 peak learning rate", gt=0)
    enc_batch: int = option(8, "documents per stage-1 batch", ge=1)
    hf_encoder: str = option("", "Hugging Face encoder id (gpu profile); empty: character Transformer")
    # stage 2: decoder
    hidden: int = option(64, "stage-2 hidden size", ge=1)
    dec_layers: int = option(2, "probe decoder layers", ge=1)
    num_probes: int = option(6, "probes per event type", ge=1)
    anchor_probes: bool = option(True, "start each probe from a ranked candidate (see probes.py)")
    dec_epochs: int = option(30, "most stage-2 epochs (stops at a dev plateau, the checkpoint chosen on dev; 20 left 2 of 3 probe decoders still improving on the transfer example)", ge=0)
    dec_epoch_steps: int = option(32, "a scheduled stage-2 epoch is at least this many optimiser steps: on a smaller data "
                                      "set dec_epochs and eval_every count groups of passes (32: one pass over "
                                      "ChFinAnn's 997 training documents; 0: plain passes)", ge=0)
    dec_patience: int = option(2, "stage-2 dev checks (every eval_every epochs) without improvement before stopping",
                               ge=1)
    dec_lr: float = option(0.003, "stage-2 learning rate when dec_lr_grid is empty", gt=0)
    dec_lr_decay: bool = option(False, "cosine decay of the stage-2 learning rate over dec_epochs (the synthetic check's "
                                       "fixed schedule); off: constant, for the plateau schedule")
    dec_lr_grid: tuple[float, ...] = option([], "decoder learning rates searched on dev, the same for every method "
                                                "(empty: dec_lr only)", gt=0)
    dec_batch: int = option(32, "documents per stage-2 batch", ge=1)
    rc_weight: float = option(0.1, "role contrastive loss weight", ge=0)
    pc_weight: float = option(0.1, "probe consistency loss weight", ge=0)
    temperature: float = option(0.1, "contrastive temperature", gt=0)
    exist_threshold: float = option(0.5, "record-existence threshold (start value when tuned)", gt=0, lt=1)
    tune_threshold: bool = option(True, "choose the existence threshold on dev among config.THRESHOLDS")
    candidates: str = option("union", "test-time candidates: union (NER + rules) | predicted (NER) | rules | gold (annotated)",
                             choices=CANDIDATES)
    train_candidates: str = option("union", "decoder training candidates: union (+ annotated) | gold (annotated only)",
                                   choices=TRAIN_CANDIDATES)
    train_fields: str = option("annotated", "entity field of a training candidate that both the NER head and the annotation "
                                            "give: annotated | predicted (the field the decoder meets at test time)",
                               choices=("annotated", "predicted"))
    type_gate: str = option("dev", "decode only detected types: on | off | dev (chosen on dev per decoder)",
                            choices=("on", "off", "dev"))
    builtin_rules: bool = option(True, "offer the built-in value patterns (events/rules.py) to the dev-chosen rule gate "
                                       "beside the patterns learned from train and the schema file's own")
    min_mention_chars: int = option(3, "predicted spans shorter than this are dropped as fragments", ge=0)
    ner_boundary_weight: float = option(1.0, "weight of the NER head's field-agnostic O/B/I loss", ge=0)
    sentence_type_weight: float = option(1.0, "weight of the sentence-level event-type loss", ge=0)
    eval_every: int = option(2, "dev check period (epochs) for the decoder checkpoint", ge=1)
    min_dev_f1: float = option(0.05, "a decoder with a lower dev micro F1 (or one that kept its last allowed epoch) makes "
                                     "its comparisons 'not interpretable'", ge=0, lt=1)
    # design of the study
    methods: tuple[str, ...] = option(["probes", "no_probe"], "decoder methods (config.METHODS; the first two are the "
                                      "card's question; cpu-long adds the extra-loss cells)", choices=METHODS,
                                      nonempty=True, unique=True)
    encoder_seeds: int = option(1, "stage-1 encoders (seeds vary pretraining, initialisation and order)", ge=1)
    decoder_seeds: int = option(3, "decoders per encoder and method", ge=1)
    frontend_steps: bool = option(False, "also train the front-end ladder (3 more encoders, one probe decoder each; "
                                         "profile cpu-long)")
    num_threads: int = option(1, "torch CPU threads", ge=1)
    # targets of the issue (as data in the report)
    target_mention_f1: float = option(0.70, "target of the NER head's dev mention F1", ge=0, le=1)
    target_bound_share: float = option(0.60, "target of end-to-end test micro F1 as a share of the same decoders' F1 "
                                             "from the annotated mentions", ge=0, le=1)
    # the synthetic sanity check
    synthetic_docs: int = option(800, "documents in the synthetic sanity check (and of data_source synthetic)", ge=10)
    synthetic_enc_epochs: int = option(4, "stage-1 epochs in the sanity check", ge=1)
    synthetic_dec_epochs: int = option(30, "stage-2 epochs in the sanity check", ge=1)
    synthetic_dec_batch: int = option(16, "documents per stage-2 batch in the sanity check", ge=1)
    # display
    n_examples: int = option(2, "test documents shown gold vs predicted", ge=0)

    def check(self) -> None:
        if self.dim % self.heads:
            raise self.error("dim", f"must be divisible by heads ({self.heads})")
        if self.hidden % self.heads:
            raise self.error("hidden", f"must be divisible by heads ({self.heads})")
        if self.split_files and len(self.split_files) != 3:
            raise self.error("split_files", "must name three files (train, dev, test) or none")
