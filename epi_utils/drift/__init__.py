"""Study 01, importance drift, on the study contract (:mod:`epi_utils.workbench.contract`).

``config`` (:class:`Config`, every field's default and help once), ``inputs`` (the world, samples
and model factory a run reads), ``study`` (:func:`run_study` -> :class:`Result`, typed records),
``summary`` (controls, verdicts from ``stats.compare`` and interval tables, as data), ``figures``
(return figures), ``rehearsal`` (:func:`rehearse`: the gpu profile's code path at toy scale on the
CPU through the same ``run_study``, with the full-scale cost estimate), ``chance`` (chance level
of a top-k Jaccard, the chance-corrected drift index D*) and ``dose_response`` (slopes of the
extra held-out loss against D, over pretrained models).
"""
from __future__ import annotations

from epi_utils.drift.config import Config
from epi_utils.drift.rehearsal import rehearse
from epi_utils.drift.study import Result, run_study

__all__ = ["Config", "Result", "rehearse", "run_study"]
