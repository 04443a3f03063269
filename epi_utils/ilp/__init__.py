"""Study 03: the Incomplete Learning Phenomenon (ILP): detect, diagnose, mitigate.

Modules: ``signals`` (per-sample signal table), ``detection`` (learned/unlearned, subset gaps),
``diagnosis`` (rule cascade, learned variant, validation against planted truth), ``recovery``
(recovery rates over seeds), ``probe`` (knowledge probe of the base model), ``mitigation``
(targeted fixes and compute-matched controls), ``study`` (the end-to-end pipeline the notebook
calls).
"""
from epi_utils.ilp.diagnosis import CAUSES, CascadeThresholds, confusion, diagnose, macro_f1, per_cause_scores
from epi_utils.ilp.recovery import recovery_rate
from epi_utils.ilp.signals import normalize_text, read_dynamics, signal_table

__all__ = ["CAUSES", "CascadeThresholds", "confusion", "diagnose", "macro_f1", "per_cause_scores",
           "recovery_rate", "normalize_text", "read_dynamics", "signal_table"]
