"""What one world of study 03 produces, as typed records (``study`` writes them, ``summary`` reads them).

Record format of :attr:`SeedRecord.table` (one row per SFT training sample, index ``sample_id``): the
sample's fields (``task``, ``stage``, ``prompt``, ``response`` and the generator-only fields of
:data:`GENERATOR_FIELDS`), ``learned`` (exact reproduction after the last stage), the signals
(``dyn_*`` training dynamics, ``probe_*`` base-model probe, ``incons_*`` duplicate prompts,
``rarity_*``/``complex_*`` word statistics; :mod:`epi_utils.ilp.signals`), ``truth`` (validation
label; ``learned`` for learned rows), ``diagnosis`` and ``evidence`` (the rule cascade's cause and the
evidence that decided it; None for learned rows).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

#: fields of the world's samples that only the generator knows (scrambled by the leak test)
GENERATOR_FIELDS = ("planted_cause", "template_id", "fact_id", "pretrain_answer", "interferes_with", "true_response")
#: causes whose signal restates how they are planted / measured, and causes the diagnosis infers
CLOSE_TO_RULE = ("inconsistency", "forgetting")
INFERRED = ("missing_knowledge", "conflict", "rare_complex")


@dataclass
class StageRun:
    """One stage of the sequential SFT: how long it trained and whether it converged."""
    stage: int
    steps: int
    epochs: float
    clean_learned_share: float
    converged: bool


@dataclass
class RecoveryRecord:
    """One arm of one mitigation on one seed: share of the diagnosed samples reproduced afterwards."""
    seed: int
    cause: str
    arm: str            # "fix" | "focused" (same diagnosed samples, no cause-specific change) | "control" (uniform)
    n_targets: int
    recovery_rate: float
    heldout_after: float


@dataclass
class SeedRecord:
    """Everything one seed (one world) produced (tables, no printing)."""
    seed: int
    table: pd.DataFrame                    # per training sample: fields, signals, learned, truth, diagnosis
    stages: list[StageRun]
    heldout_accuracy: float
    base_recall: dict[str, float]
    recovery: list[RecoveryRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    world: pd.DataFrame | None = None      # train/held-out samples per stage, task and planted cause
    setting: str = "default"               # the settings-family member (:mod:`epi_utils.ilp.settings`)
    setting_text: str = ""                 # what the setting changes, in words
