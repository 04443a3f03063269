"""Study 02, EPI vs static isolation: ``config`` (:class:`Config`), ``inputs`` (sample pool, base model,
per-seed splits and batches), ``mixed`` (the main design, issue 26: mixed multi-task SFT, tuning and grid)
and ``mixed_summary`` (its tables, verdicts and :class:`Result`), ``study`` and ``summary`` (the earlier
two-stage design, ``design="two_stage"``), ``masks`` (what masks do), ``figures``, ``rehearsal``
(:func:`rehearse`: the gpu profile's code path on the CPU at toy scale, with the full-scale cost
estimate), ``hf_data`` (the gpu profile's real data sets)."""
from __future__ import annotations

from epi_utils.isolation_study.config import Config
from epi_utils.isolation_study.mixed_summary import MixedResult as Result
from epi_utils.isolation_study.rehearsal import rehearse
from epi_utils.workbench.contract import StudyResult


def run_study(cfg: Config, *, progress=None, inputs=None) -> StudyResult:
    """The study of ``cfg.design`` (:func:`epi_utils.isolation_study.mixed.run_study`)."""
    from epi_utils.isolation_study import mixed
    from epi_utils.workbench import progress as progress_mod

    return mixed.run_study(cfg, progress=progress or progress_mod.progress, inputs=inputs)


__all__ = ["Config", "Result", "rehearse", "run_study"]
