"""Study 04's one configuration: the pipeline's options and the design of the study.

Built from the notebook's parameters with
``epi_utils.workbench.params.config_from_params(EventConfig, globals())``; every field is validated
in ``__post_init__`` and a bad value raises ``ValueError`` naming the parameter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

CANDIDATES = ("predicted", "rules", "union", "gold")   # test-time candidate sets (see frontend.extract_features)
TRAIN_CANDIDATES = ("gold", "union")                  # decoder training candidates
THRESHOLDS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6)              # record-existence thresholds tried on dev
METHODS = ("probes", "no_probe", "probes_no_extra_losses", "no_probe_extra_losses",
           "wo_alignment", "wo_role_contrastive", "wo_probe_consistency")


@dataclass
class EventConfig:
    """Every option of the pipeline and of the study's design (keyword-only)."""

    # stage 1: encoder, NER head, type detector
    dim: int = 64                 # stage-1 hidden size
    enc_layers: int = 2           # Transformer layers of the character encoder
    heads: int = 4                # attention heads (stage 1 and 2)
    dropout: float = 0.1          # dropout in the encoder (embeddings and layers) and the decoder
    max_sentence_chars: int = 128 # characters kept per sentence
    max_sentences: int = 24       # sentences kept per document
    bigram_buckets: int = 0       # hashed character-bigram embedding buckets of the character encoder (0 = none)
    enc_lstm: bool = False        # a residual BiLSTM layer over the character Transformer's output
    pretrain_epochs: int = 0      # masked-character pretraining passes over all documents' text (0 = none)
    pretrain_lr: float = 2e-3     # masked-character pretraining peak learning rate
    enc_epochs: int = 4           # stage-1 epochs (best epoch on dev mention F1 kept)
    enc_lr: float = 2e-3
    enc_batch: int = 8            # documents per stage-1 batch
    ner_boundary_weight: float = 1.0   # weight of the field-agnostic O/B/I loss of the NER head
    sentence_type_weight: float = 1.0  # weight of the sentence-level type loss
    min_mention_chars: int = 3    # predicted spans shorter than this are dropped (fragments)
    hf_encoder: str = ""          # Hugging Face encoder id (or local folder) instead of the character Transformer
    # stage 2: decoder
    hidden: int = 64
    dec_layers: int = 2
    num_probes: int = 8           # probes (records) per event type
    dec_epochs: int = 20          # stage-2 epochs (the checkpoint is chosen on dev)
    dec_lr: float = 2e-3
    dec_lr_grid: tuple = ()       # decoder learning rates searched on dev for every method (empty = dec_lr only)
    dec_batch: int = 16
    rc_weight: float = 0.1        # role contrastive loss weight (when a variant uses it)
    pc_weight: float = 0.1        # probe consistency loss weight (when a variant uses it)
    temperature: float = 0.1
    exist_threshold: float = 0.5  # record-existence threshold (start value when tuned)
    tune_threshold: bool = True   # choose the existence threshold on dev among THRESHOLDS
    type_gate: str = "dev"        # decode only detected types: "on" | "off" | "dev" (chosen on dev)
    candidates: str = "union"     # test-time candidates, one of CANDIDATES
    train_candidates: str = "union"  # decoder training candidates, one of TRAIN_CANDIDATES
    eval_every: int = 2           # dev evaluation period (epochs) for the decoder checkpoint
    anchor_probes: bool = True    # start each probe from a ranked candidate (see probes.py)
    device: str = "cpu"
    # design of the study
    methods: tuple = ("probes", "no_probe", "probes_no_extra_losses", "no_probe_extra_losses")
    encoder_seeds: int = 2        # stage-1 encoders (each pretrained and trained with its own seed)
    decoder_seeds: int = 2        # decoders per encoder and method
    seed: int = 0                 # first seed

    def __post_init__(self):
        for name in ("dim", "enc_layers", "heads", "max_sentence_chars", "max_sentences", "enc_batch",
                     "hidden", "dec_layers", "num_probes", "dec_batch", "eval_every", "encoder_seeds",
                     "decoder_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("enc_epochs", "dec_epochs", "pretrain_epochs", "bigram_buckets", "rc_weight", "pc_weight", "min_mention_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.dim % self.heads or self.hidden % self.heads:
            raise ValueError(f"dim ({self.dim}) and hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.candidates not in CANDIDATES:
            raise ValueError(f"candidates must be one of {CANDIDATES}, got {self.candidates!r}")
        if self.train_candidates not in TRAIN_CANDIDATES:
            raise ValueError(f"train_candidates must be one of {TRAIN_CANDIDATES}, got {self.train_candidates!r}")
        if self.type_gate not in ("on", "off", "dev"):
            raise ValueError(f"type_gate must be 'on', 'off' or 'dev', got {self.type_gate!r}")
        if not 0 < self.exist_threshold < 1:
            raise ValueError(f"exist_threshold must be in (0, 1), got {self.exist_threshold}")
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty list from {METHODS}, got {list(self.methods)}")
        self.dec_lr_grid = tuple(float(x) for x in self.dec_lr_grid)
        if any(x <= 0 for x in self.dec_lr_grid):
            raise ValueError(f"dec_lr_grid must hold positive learning rates, got {list(self.dec_lr_grid)}")

    def validate(self) -> "EventConfig":
        """Validation happens in ``__post_init__``; kept so that ``EventConfig(...).validate()`` reads."""
        self.__post_init__()
        return self

    def replace(self, **changes: Any) -> "EventConfig":
        """A copy with ``changes`` (validated)."""
        unknown = [k for k in changes if k not in {f.name for f in fields(self)}]
        if unknown:
            raise ValueError(f"unknown EventConfig field(s) {unknown}")
        return EventConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return asdict(self)
