"""What this machine offers: versions, device, threads, data sets, and a matmul timing.

Used by ``notebooks/00_environment.ipynb``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from epi_utils.workbench import datasets, runs
from epi_utils.workbench.cards import Card, Headline
from epi_utils.workbench.contract import StudyConfig, option
from epi_utils.workbench.tables import ReaderTable, format_number


@dataclasses.dataclass(frozen=True)
class EnvironmentConfig(StudyConfig):
    """Parameters of ``00_environment.ipynb`` (no study: a description of the machine)."""

    matmul_size: int = option(512, "side of the square matrices timed below", ge=1, le=16384)
    matmul_repeats: int = option(10, "timed repetitions of the matmul", ge=1)

    @property
    def timed_size(self) -> int:
        """The matmul side actually timed: a rehearsal of the gpu profile on the CPU times at most 256."""
        return min(self.matmul_size, 256) if self.rehearse else self.matmul_size


def describe(*, device) -> dict[str, Any]:
    """Versions, device, CPU (its kind changes the floats of every study) and thread count as a flat dict."""
    import torch

    info = {**runs.library_versions(), "device": str(device), "threads": torch.get_num_threads(),
            "cpu": runs.cpu_model(), "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "cuda_available": torch.cuda.is_available(), **runs.git_state(), "data_dir": str(runs.data_dir())}
    if str(device).startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def info_table(info: dict[str, Any]) -> ReaderTable:
    """``describe()`` as a reader's table: ``property | value``."""
    import pandas as pd

    frame = pd.DataFrame({"property": list(info), "value": [str(v) for v in info.values()]})
    return ReaderTable(frame)


def availability_table():
    """One row per data set and offline model package: ``name, kind, status, detail``."""
    import pandas as pd

    report = datasets.check_all()
    rows = []
    for name, ds in report["datasets"].items():
        status = "complete" if not ds["missing"] else ("partial" if ds["present"] else "absent")
        rows.append({"name": name, "kind": "data set", "status": status,
                     "detail": "missing: " + ", ".join(ds["missing"]) if ds["missing"] else f"{len(ds['present'])} files"})
    for pkg, m in report["model_packages"].items():
        rows.append({"name": pkg, "kind": "model package", "status": "complete" if m["installed"] else "absent",
                     "detail": m["what"]})
    return pd.DataFrame(rows)


def time_matmul(*, size: int, repeats: int, device, seed: int = 0) -> dict[str, Any]:
    """Time ``repeats`` fp32 matmuls of two ``(size, size)`` matrices after one warm-up.

    Returns ``{"times_ms": [...], "median_ms": m, "gflops": 2*size**3 / median}``.
    """
    import torch

    if size <= 0 or repeats <= 0:
        raise ValueError(f"size and repeats must be positive, got size={size}, repeats={repeats}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    (a @ b).sum().item()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        (a @ b)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    median = float(np.median(times))
    return {"times_ms": times, "median_ms": median, "gflops": 2 * size**3 / (median / 1e3) / 1e9, "size": size}


def plot_matmul_times(timing: dict[str, Any]):
    """Bar chart of each repetition's time with the median as a line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(range(1, len(timing["times_ms"]) + 1), timing["times_ms"])
    ax.axhline(timing["median_ms"], color="black", ls="--", label=f"median {timing['median_ms']:.2f} ms")
    ax.set(xlabel="repetition", ylabel="ms", title=f"{timing['size']}x{timing['size']} fp32 matmul")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def card(info: dict[str, Any], availability, timing: dict[str, Any]) -> Card:
    """The index's card for this machine: which data sets are complete, the device and threads, and
    the matmul throughput (every number from this run's ``describe``, ``availability_table`` and
    ``time_matmul``)."""
    complete = int((availability["status"] == "complete").sum())
    total = len(availability)
    missing = [str(n) for n, s in zip(availability["name"], availability["status"]) if s != "complete"]
    answer = (f"{complete} of {total} data sets and model packages are complete"
              + (f" ({', '.join(missing)} not)" if missing else "")
              + f"; device {info['device']} with {info['threads']} thread{'' if info['threads'] == 1 else 's'} runs a {timing['size']}x{timing['size']} "
              f"fp32 matmul at {format_number(timing['gflops'])} GFLOP/s"
              + (f" (CPU: {info['cpu']}; torch's {info['torch_cpu_kernels']} kernels)." if info.get("cpu") else "."))
    over = f"median of {len(timing['times_ms'])} repetitions"
    return Card("What does this machine offer the studies?", answer,
                (Headline("matmul throughput", float(timing["gflops"]), unit="GFLOP/s", over=over),
                 Headline("matmul time", float(timing["median_ms"]), unit="ms", over=over),
                 Headline("data sets and packages complete", float(complete), unit=f"of {total}"),
                 Headline("torch threads", float(info["threads"]))),
                figure="matmul_times")
