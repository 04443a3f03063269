"""Study 02, EPI vs static isolation: ``config`` (:class:`Config`), ``inputs`` (sample pool, base model,
per-seed splits and batches), ``study`` (:func:`run_study`, typed run records, :class:`Result`),
``summary`` (tables and paired verdicts from ``stats``), ``figures``, ``rehearsal`` (:func:`rehearse`:
the gpu profile's code path at toy scale on the CPU, with the full-scale cost estimate), ``hf_data``
(the gpu profile's real data sets)."""
from __future__ import annotations

from epi_utils.isolation_study.config import Config
from epi_utils.isolation_study.rehearsal import rehearse
from epi_utils.isolation_study.study import Result, run_study

__all__ = ["Config", "Result", "rehearse", "run_study"]
