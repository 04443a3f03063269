"""The one configuration of study 03 (the Incomplete Learning Phenomenon), built from the notebook's
parameters with :func:`epi_utils.workbench.params.config_from_params` and validated here."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from epi_utils.data.world import TASKS

BACKENDS_NAMED = ("tiny", "smollm2")   # any other value is a Hugging Face id / local folder (real facts)
PROBE_FORMATS = ("raw", "sft")


@dataclass(frozen=True)
class IlpConfig:
    """Every setting of one study run (see the notebook's parameters cell for each field's meaning)."""

    seed: int = 0
    n_seeds: int = 5
    device: str = "auto"
    threads: int = 1
    workers: int = 2
    backend: str = "tiny"
    rehearse: bool = False
    # world (each seed builds its own world and pretrains its own tiny model)
    n_entities: int = 50
    tasks: tuple[str, ...] = ("reversal", "fact_qa")
    n_stages: int = 2
    n_train_per_task: int = 230
    n_heldout_per_task: int = 10
    pretrain_fact_fraction: float = 0.75
    missing_knowledge_rate: float = 0.2
    conflict_rate: float = 0.2
    inconsistency_rate: float = 0.12
    rare_complex_rate: float = 0.1
    pretrain_epochs: int = 25
    # SFT
    replay: float = 0.25
    knowledge_mix: float = 1.0
    sft_lr: float = 3e-3
    sft_batch_size: int = 16
    max_epochs: float = 40.0
    eval_every: int = 40
    converge_share: float = 0.95
    # signals and diagnosis
    probe_format: str = "raw"
    min_known_share: float = 0.2
    conflict_quantile: float = 0.1
    similarity_threshold: float = 0.95
    template_df: float = 0.5
    rare_max_ratio: float = 0.25
    complex_min_len_z: float = 3.0
    # mitigation
    mitigate: bool = True
    mit_steps: int = 40
    mit_batch_size: int = 16
    mit_lr: float = 1e-3
    mit_fix_share: float = 0.5
    mit_replay_buffer: int = 32
    explorer_rows: int = 30

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> None:
            raise ValueError(f"IlpConfig.{name} (notebook parameter {name!r}) must be {allowed}, "
                             f"got {getattr(self, name)!r}")

        for name in ("seed", "threads", "n_heldout_per_task"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(name, "an integer >= 0")
        for name in ("n_seeds", "n_entities", "n_stages", "n_train_per_task", "pretrain_epochs", "sft_batch_size",
                     "eval_every", "workers", "mit_steps", "mit_batch_size", "explorer_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(name, "an integer >= 1")
        if not isinstance(self.backend, str) or not self.backend:
            bad("backend", f"one of {BACKENDS_NAMED} or a Hugging Face model id")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            bad("tasks", f"a non-empty list of tasks from {TASKS}")
        for name in ("pretrain_fact_fraction", "missing_knowledge_rate", "conflict_rate", "inconsistency_rate",
                     "rare_complex_rate", "replay", "knowledge_mix", "converge_share", "min_known_share", "conflict_quantile",
                     "template_df", "rare_max_ratio", "mit_fix_share"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                bad(name, "a number in [0, 1]")
        if self.replay >= 1.0 and self.n_stages > 1:
            bad("replay", "< 1 (forgetting needs stage-0 samples that are not replayed)")
        for name in ("sft_lr", "max_epochs", "mit_lr", "complex_min_len_z", "similarity_threshold"):
            if not float(getattr(self, name)) > 0:
                bad(name, "> 0")
        if self.probe_format not in PROBE_FORMATS:
            bad("probe_format", f"one of {PROBE_FORMATS}")
        if self.rehearse and self.tiny_backend:
            bad("rehearse", "False for the tiny backend (the rehearsal is for a real LLM backend: gpu profile)")

    @property
    def tiny_backend(self) -> bool:
        return self.backend == "tiny"

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.n_seeds))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}
