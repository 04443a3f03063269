"""Study 03: the Incomplete Learning Phenomenon (ILP): detect, diagnose, mitigate.

Package shape: ``config`` (the study's one dataclass), ``study`` (worlds, base models, SFT to
convergence, truth, one seed at a time), ``summary`` (scores with intervals over worlds,
comparisons as data), ``figures``. Concept modules: ``signals`` (per-sample signals a user has),
``probe`` (the base model's answers to the SFT prompts), ``diagnosis`` (rule cascade and
validation), ``detection`` (learned/unlearned, subset gaps), ``mitigation`` (targeted fixes and
compute-matched controls), ``recovery`` (recovery rates), ``explorer`` (evidence table),
``rehearsal`` (GPU rehearsal of the gpu profile).
"""
from epi_utils.ilp.diagnosis import CAUSES, CascadeThresholds, confusion, diagnose, macro_f1, per_cause_scores
from epi_utils.ilp.recovery import recovery_rate
from epi_utils.ilp.signals import normalize_text, read_dynamics, signal_table

__all__ = ["CAUSES", "CascadeThresholds", "confusion", "diagnose", "macro_f1", "per_cause_scores",
           "recovery_rate", "normalize_text", "read_dynamics", "signal_table"]
