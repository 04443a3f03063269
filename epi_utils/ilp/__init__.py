"""Study 03: the Incomplete Learning Phenomenon (ILP): detect, diagnose, mitigate.

Study shape (:mod:`epi_utils.workbench.contract`): ``config`` (:class:`Config`, the one dataclass),
``study`` (:func:`run_study` -> :class:`Result`: every world, one seed at a time), ``summary``
(tables over worlds, scores with intervals over worlds, comparisons as data), ``figures`` (return
figures), ``rehearsal`` (:func:`rehearse`: the gpu profile's code path at toy scale on the CPU, then
the full-scale estimate). Concept modules: ``records`` (what one world produces), ``training``
(world, base model, schedule, SFT to convergence), ``signals`` (per-sample signals a user has),
``probe`` (the base model's answers to the SFT prompts), ``diagnosis`` (rule cascade, learned
diagnosis and validation), ``detection`` (learned/unlearned, subset gaps), ``mitigation`` (targeted
fixes and compute-matched controls), ``recovery`` (recovery rates), ``explorer`` (evidence table),
``baselines`` (no-model rules and the cascade without the probe, scored like the cascade).
"""
from epi_utils.ilp.config import Config
from epi_utils.ilp.rehearsal import rehearse
from epi_utils.ilp.study import Result, run_study

__all__ = ["Config", "Result", "rehearse", "run_study"]
