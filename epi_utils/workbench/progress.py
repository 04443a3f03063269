"""Progress that reaches the person waiting, and never the rendered report.

In JupyterLab, :func:`progress` is a ``tqdm.auto`` bar (a widget where ``ipywidgets`` is
installed). In a batch run (``epi run`` / ``epi sweep`` execute the notebook with papermill and set
``EPI_RUN_DIR`` for its kernel), it draws nothing in the notebook: it appends one line per unit of
work, with elapsed time and an ETA, to ``<run dir>/progress.log``, and the runner prints those lines
on the terminal (:func:`relay`). :func:`batch_environment` also switches off the progress bars and
advisory warnings of the libraries underneath (tqdm, datasets, huggingface_hub, transformers) for
the kernel, so that a report holds the study's outputs and nothing else.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, TextIO, TypeVar

RUN_DIR_ENV = "EPI_RUN_DIR"
PROGRESS_FILE = "progress.log"
#: environment given to a batch run's kernel: no bars or advisory warnings from the libraries.
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore",
    "TOKENIZERS_PARALLELISM": "false",
}
T = TypeVar("T")


def batch_run_dir() -> Path | None:
    """The run folder when this process is a batch run's kernel, else ``None`` (interactive)."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value) if value else None


def quiet() -> bool:
    """True in a batch run: draw no progress bar in the notebook (pass as tqdm's ``disable``)."""
    return batch_run_dir() is not None


def format_duration(seconds: float) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def log_line(message: str) -> None:
    """One line for the terminal of a batch run (appended to ``progress.log``); printed in Lab."""
    folder = batch_run_dir()
    if folder is None:
        print(message)
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / PROGRESS_FILE, "a", encoding="utf-8") as handle:
        handle.write(message.rstrip("\n") + "\n")


def pretrain_log_line(key: str, *, epochs: int, seconds: float) -> str:
    """The ``progress.log`` line :func:`epi_utils.lm.models.load_model` writes after pretraining a
    ``tiny`` world model (cache key ``key``); :func:`epi_utils.workbench.costs.pretrain_seconds`
    reads it back."""
    return f"pretrained a tiny world model ({key}, {epochs} epochs) in {seconds:.1f} s"


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` showing progress: a tqdm bar in Lab, one terminal line per item in a batch run.

    ``desc`` names the unit of work (``"policy x seed"``, ``"epoch"``); ``total`` defaults to
    ``len(iterable)`` when it has one. The ETA is elapsed / done * remaining.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not quiet():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc, total=total, unit=unit)
        return
    start = time.time()
    done = 0
    for item in iterable:
        yield item
        done += 1
        log_line(progress_line(desc, done=done, total=total, elapsed=time.time() - start, unit=unit))


def progress_line(desc: str, *, done: int, total: int | None, elapsed: float, unit: str = "it") -> str:
    """``"desc: 3/8 it, elapsed 1:56, ETA 3:14"``; the ETA is elapsed / done * remaining."""
    eta = f", ETA {format_duration(elapsed / done * (total - done))}" if total and done else ""
    of = f"/{total}" if total else ""
    return f"{desc}: {done}{of} {unit}, elapsed {format_duration(elapsed)}{eta}"


@contextlib.contextmanager
def relay(path: Path | str, *, stream: TextIO | None = None, prefix: str = "",
          poll_s: float = 0.5) -> Iterator[None]:
    """While the block runs, print every line appended to ``path`` on ``stream`` (stderr)."""
    path = Path(path)
    out = stream if stream is not None else sys.stderr
    stop = threading.Event()

    def pump(handle_pos: list[int]) -> None:
        if not path.exists():
            return
        with open(path, encoding="utf-8") as handle:
            handle.seek(handle_pos[0])
            for line in handle:
                if line.endswith("\n"):
                    out.write(prefix + line)
                    handle_pos[0] += len(line.encode("utf-8"))
                else:
                    break
            out.flush()

    position = [path.stat().st_size if path.exists() else 0]

    def loop() -> None:
        while not stop.wait(poll_s):
            pump(position)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)
        pump(position)


@contextlib.contextmanager
def batch_environment(run_dir: Path | str, *, prefix: str = "", stream: TextIO | None = None) -> Iterator[None]:
    """Environment for a batch run's kernel (``EPI_RUN_DIR`` + :data:`QUIET_ENV`), restored after,
    with :func:`relay` of the run's ``progress.log`` to the terminal."""
    run_dir = Path(run_dir)
    saved = {k: os.environ.get(k) for k in (RUN_DIR_ENV, *QUIET_ENV)}
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    os.environ.update(QUIET_ENV)
    try:
        with relay(run_dir / PROGRESS_FILE, prefix=prefix, stream=stream):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
