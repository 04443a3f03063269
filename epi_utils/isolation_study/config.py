"""Study 02's settings: one dataclass, built from the notebook's parameters
(``epi_utils.workbench.params.config_from_params(StudyConfig, globals())``), validated here."""
from __future__ import annotations

from dataclasses import asdict, dataclass

#: masking policies that can sit on the frontier (every one takes ``isolation_ratio``)
MASKED = ("static_cpi", "static_grad", "random_mask", "epi", "epi_replay", "epi_frozen", "cpi_after_stage",
          "importance_after_stage", "random_after_stage")
#: reference rows of every table: floor, retention ceiling, standard continual-learning reference, regulariser
BOUNDS = ("full_sft", "separate", "replay", "ewc")
#: sizes of the ``tiny`` GPT-2 builder (``epi_utils.lm.models.TinyModelConfig`` fields)
MODEL_SIZES = {"default": dict(n_layer=4, n_head=4, n_embd=128),   # ~0.9M parameters
               "small": dict(n_layer=6, n_head=8, n_embd=256)}     # ~4.9M parameters
DATA_SOURCES = ("world", "hf")


@dataclass
class StudyConfig:
    """Every setting of study 02 (the notebook's parameters cell documents each one)."""

    seed: int = 0
    n_seeds: int = 3
    device: str = "cpu"
    rehearse: bool = False
    model: str = "tiny"
    model_size: str = "small"
    pretrain: bool = True
    pretrain_seed: int = 0
    pretrain_epochs: int = 40
    pretrain_lr: float = 1e-3
    data_source: str = "world"
    world_seed: int = 0
    world_tasks: tuple = ("fact_qa", "format_conversion")
    n_train_per_task: int = 48
    n_val_per_task: int = 16
    n_test_per_task: int = 48
    n_train_eval_per_task: int = 16
    interference_rate: float = 0.0
    hf_tasks: tuple = ("gsm8k", "codealpaca")
    hf_n_train: int = 2000
    hf_n_val: int = 100
    hf_n_test: int = 200
    hf_max_response_words: int = 256
    methods: tuple = ("cpi_after_stage", "importance_after_stage", "random_after_stage", "epi_replay", "epi_frozen")
    bounds: tuple = BOUNDS
    ratios: tuple = (0.05, 0.2, 0.5)
    steps_per_stage: int = 100
    lr: float = 3e-4
    batch_size: int = 16
    mask_update_interval: int = 10
    warmup_steps: int = 10
    ema_beta: float = 0.9
    probe_batches: int = 2
    probe_steps: int = 10
    probe_lr: float = 3e-4
    replay_batches: int = 4
    replay_samples: int = 8
    ewc_lambdas: tuple = (1e6, 1e8, 1e10)
    max_new_tokens: int = 0
    eval_batch_size: int = 64
    bf16: bool = False
    checkpoint_runs: bool = False
    workers: int = 1

    def __post_init__(self):
        for name in ("world_tasks", "hf_tasks", "methods", "bounds", "ratios", "ewc_lambdas"):
            setattr(self, name, tuple(getattr(self, name)))
        self.ratios = tuple(float(r) for r in self.ratios)
        self.ewc_lambdas = tuple(float(v) for v in self.ewc_lambdas)

        def bad(name, allowed):
            raise ValueError(f"StudyConfig.{name} must be {allowed}, got {getattr(self, name)!r}")
        unknown = [m for m in self.methods if m not in MASKED]
        if unknown:
            raise ValueError(f"StudyConfig.methods: unknown {unknown}; allowed values: {MASKED}")
        unknown = [b for b in self.bounds if b not in BOUNDS]
        if unknown:
            raise ValueError(f"StudyConfig.bounds: unknown {unknown}; allowed values: {BOUNDS}")
        if "full_sft" not in self.bounds:
            raise ValueError("StudyConfig.bounds must contain 'full_sft' (the floor every comparison is paired with)")
        for name in ("n_seeds", "steps_per_stage", "batch_size", "mask_update_interval", "probe_batches",
                     "probe_steps", "replay_batches", "eval_batch_size", "n_train_per_task", "n_test_per_task",
                     "hf_n_train", "hf_n_test", "pretrain_epochs", "workers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "a positive integer")
        for name in ("seed", "warmup_steps", "replay_samples", "max_new_tokens", "n_val_per_task",
                     "n_train_eval_per_task", "hf_n_val", "pretrain_seed", "world_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, "a non-negative integer")
        if not self.ratios or any(not 0.0 < r < 1.0 for r in self.ratios):
            bad("ratios", "a non-empty list of shares in (0, 1)")
        if not 0.0 <= self.interference_rate <= 1.0:
            bad("interference_rate", "a share in [0, 1]")
        if self.data_source not in DATA_SOURCES:
            bad("data_source", f"one of {DATA_SOURCES}")
        if self.model == "tiny" and self.model_size not in MODEL_SIZES:
            bad("model_size", f"one of {tuple(MODEL_SIZES)}")
        if not self.lr > 0 or not self.probe_lr > 0 or not self.pretrain_lr > 0:
            raise ValueError(f"StudyConfig.lr, probe_lr and pretrain_lr must be > 0, got {self.lr}, "
                             f"{self.probe_lr}, {self.pretrain_lr}")
        if not 0.0 <= self.ema_beta < 1.0:
            bad("ema_beta", "in [0, 1)")
        if "ewc" in self.bounds and (not self.ewc_lambdas or any(v < 0 for v in self.ewc_lambdas)):
            bad("ewc_lambdas", "a non-empty list of non-negative penalties (chosen on the validation split)")
        if "ewc" in self.bounds and len(self.ewc_lambdas) > 1 and self.n_val_per_task < 1 and self.data_source == "world":
            bad("n_val_per_task", ">= 1 when EWC's lambda is chosen on the validation split")
        if "replay" in self.bounds and self.replay_samples < 1:
            bad("replay_samples", ">= 1 when the replay bound is run")
        if self.workers > 1 and str(self.device).startswith("cuda"):
            bad("workers", "1 on cuda (worker processes are for CPU cores)")
        if self.data_source == "world" and len(self.world_tasks) < 2:
            bad("world_tasks", "at least two tasks (stage 0 | stage 1)")
        if self.data_source == "hf" and len(self.hf_tasks) < 2:
            bad("hf_tasks", "at least two tasks (stage 0 | stage 1)")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.n_seeds))

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.world_tasks if self.data_source == "world" else self.hf_tasks

    def to_dict(self) -> dict:
        return asdict(self)
