"""Study 01, importance drift: ``config`` (DriftConfig), ``study`` (runs and typed records),
``summary`` (controls and verdicts from ``stats.compare``), ``figures``, ``rehearse`` (the gpu
profile's code path at toy scale on the CPU, with the full-scale cost estimate)."""
