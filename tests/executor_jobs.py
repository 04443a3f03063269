"""The jobs tests/test_executors.py sends to worker processes (local spawn, Ray, submitit), in a module
of their own: a worker unpickles a job by importing the module that defines it, and this one imports
nothing heavy (torch only inside ``noisy_sum``), where the test module imports torch and the CLI
(papermill, nbformat, jsonschema: about 3 s of imports in every fresh worker process; issue 34)."""
from __future__ import annotations

import math
import time
from pathlib import Path


def noisy_sum(seed: int) -> tuple[float, int]:
    """A tiny seeded torch computation (and the torch threads it ran with)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 64, generator=gen, dtype=torch.float64)
    return float((x @ x.T).tanh().sum()), torch.get_num_threads()


def sqrt_or_fail(x: float) -> float:
    return math.sqrt(x)


def sleep_then_mark(job: tuple[str, float]) -> str:
    path, seconds = job
    time.sleep(seconds)
    Path(path).write_text("finished")
    return path
