"""One way to run independent tasks: here in spawned processes, on a Ray cluster, or on SLURM.

``epi sweep`` (one task per grid point) and every in-study grid (:func:`map_jobs`, e.g. study 02's
policy x ratio x seed runs) go through :class:`Tasks`; the backend is a name and its options:

``local`` (the default)
    ``workers`` spawned interpreters on this machine with ``threads`` torch threads each (a fresh
    interpreter: no forked torch thread pools); ``workers=1`` runs the tasks in this process.
``ray``
    a Ray cluster: ``address=None`` starts a local one for the duration (``workers * threads`` CPUs),
    ``address="ray://host:10001"`` or ``"auto"`` joins an existing one. Each task asks Ray for
    ``threads`` CPUs and ``gpus`` GPUs (``ray.remote(num_cpus=..., num_gpus=...)``); the shared
    inputs (``init``, ``initargs``) are put into the object store once.
``slurm``
    SLURM through submitit: one job per task with ``partition``, ``time`` (minutes, ``MM``,
    ``HH:MM:SS`` or ``D-HH:MM:SS``), ``gpus`` per task and ``threads`` CPUs per task; ``folder`` holds
    submitit's pickles and logs (it must be visible to the nodes: default
    ``$EPI_CACHE_DIR/submitit``); ``cluster="local"`` runs the same jobs as local processes through
    submitit's local executor (the tests use it); ``slurm_options`` passes further
    ``update_parameters`` keys (``{"slurm_mem_gb": 16}``).

Whatever the backend:

- at most ``workers`` tasks are in flight (on a cluster: ``--jobs`` is how many points run at once);
- every task seeds its own generators (the caller's ``fn`` must), so its result does not depend on
  where it ran or what ran before it there: the same jobs give bit-identical results everywhere;
- ``init(*initargs)`` runs once per worker process before its first task (per job on SLURM);
- an exception in ``fn`` comes back as a :class:`Outcome` with ``status="failed"`` and the remote
  traceback (the same on every backend); a worker that died (killed, out of memory) is ``failed``
  too; a task stopped by a Ctrl-C or a cancellation is ``cancelled``;
- leaving the ``with`` block on an exception (Ctrl-C, SIGTERM turned into ``KeyboardInterrupt``, a
  failure the caller raises) cancels every task in flight: local workers get SIGINT (a running task
  sees ``KeyboardInterrupt``), Ray tasks ``ray.cancel``, SLURM jobs ``scancel``.

``ray`` and ``submitit`` are imported only by their backend. ``fn``, ``init`` and the jobs must be
picklable (module-level functions; on a cluster, importable there: the same checkout and venv).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

BACKENDS = ("local", "ray", "slurm")
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


@dataclass(frozen=True)
class TaskFailure:
    """An exception raised in a task, as it comes back from any backend (type, message, traceback)."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def of(cls, exc: BaseException) -> TaskFailure:
        return cls(type(exc).__name__, str(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def __str__(self) -> str:
        return self.message or self.type


class RemoteError(RuntimeError):
    """The exception a task raised on another process or machine; ``str`` is its traceback there."""


@dataclass
class Outcome:
    """What became of one task: ``status`` is ``done`` (``value`` holds ``fn(job)``), ``failed``
    (``failure``) or ``cancelled``; ``index`` is the job's position in the submitted list."""

    index: int
    status: str
    value: Any = None
    failure: TaskFailure | None = None
    exception: BaseException | None = None  # the original exception where it ran in this process


# --------------------------------------------------------------------------- the task, where it runs
_READY: set[str] = set()  # setups (init calls) already run in this process
_LOCAL: dict[str, Any] = {}  # a local worker's threads, stop event and setup (set by _local_start)


def _use_threads(threads: int | None) -> None:
    """``threads`` intra-op threads for torch in this worker process. Where torch is not imported yet
    (a job that needs no torch, or one that imports it only when it runs), the thread count goes to
    the environment that torch reads when it loads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) instead
    of importing torch here: that import cost every spawned, Ray and submitit worker 3-4 s of CPU,
    whatever its job (issue 34)."""
    if threads:
        torch = sys.modules.get("torch")
        if torch is None:
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        elif torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class _Stored:
    """Shared inputs pickled once into a file (SLURM: one file, not one copy per job)."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> tuple:
        with open(self.path, "rb") as handle:
            return pickle.load(handle)


class _InObjectStore:
    """Shared inputs put into Ray's object store once (a nested reference: not fetched per task)."""

    def __init__(self, ref):
        self.ref = ref

    def load(self) -> tuple:
        import ray

        return ray.get(self.ref)


def _run_task(fn: Callable, job: Any, threads: int | None, setup: tuple | None) -> tuple:
    """Run one task where it landed: ``(status, value-or-TaskFailure)``."""
    try:
        _use_threads(threads)
        if setup is not None:
            key, init, initargs = setup
            if key not in _READY:
                if isinstance(initargs, (_Stored, _InObjectStore)):
                    initargs = initargs.load()  # fetched once per worker process
                init(*initargs)
                _READY.add(key)
        return DONE, fn(job)
    except KeyboardInterrupt:
        return CANCELLED, None
    except Exception as exc:
        return FAILED, TaskFailure.of(exc)


def _local_start(threads: int, stop, setup: tuple | None) -> None:
    """A local worker's start: idle, it ignores Ctrl-C (the parent cancels); it keeps the setup."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _LOCAL.update(threads=threads, stop=stop, setup=setup)
    _use_threads(threads)


def _local_task(fn: Callable, job: Any) -> tuple:
    import signal

    if _LOCAL["stop"].is_set():
        return CANCELLED, None  # handed over just before a cancellation: never started
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a running task reacts to Ctrl-C ...
    try:
        return _run_task(fn, job, _LOCAL["threads"], _LOCAL["setup"])
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ... an idle worker does not


# --------------------------------------------------------------------------- backends
class _Backend:
    """Submit one task, wait for some, cancel, close. Handles are opaque to :class:`Tasks`."""

    remote = False  # True: results come back over the wire (no shared filesystem assumed)

    def submit(self, fn: Callable, job: Any) -> Any:
        raise NotImplementedError

    def wait(self, handles: list) -> list[tuple[Any, tuple]]:
        """Block until at least one handle is finished; ``[(handle, (status, value)), ...]``."""
        raise NotImplementedError

    def cancel(self, handles: list) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Finished:
    def __init__(self, result: tuple):
        self.result = result


class _Inline(_Backend):
    """``workers=1`` on ``local``: the tasks run in this process, one after another."""

    def __init__(self, *, init: Callable | None, initargs: tuple):
        self.init, self.initargs, self.started = init, initargs, False

    def submit(self, fn, job):
        if not self.started and self.init is not None:
            self.init(*self.initargs)
        self.started = True
        try:
            return _Finished((DONE, fn(job)))
        except Exception as exc:  # KeyboardInterrupt propagates: the caller is interrupted
            return _Finished((FAILED, TaskFailure.of(exc), exc))

    def wait(self, handles):
        return [(h, h.result) for h in handles]

    def cancel(self, handles):
        pass


class _Local(_Backend):
    """Spawned worker processes on this machine (a fresh pool again if one died)."""

    def __init__(self, *, workers: int, threads: int, init: Callable | None, initargs: tuple):
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.stop = self.ctx.Event()
        self.workers, self.threads = workers, threads
        self.setup = (uuid.uuid4().hex, init, initargs) if init is not None else None
        self.pool = None

    def _pool(self):
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None or getattr(self.pool, "_broken", False):
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx, initializer=_local_start,
                                            initargs=(self.threads, self.stop, self.setup))
        return self.pool

    def submit(self, fn, job):
        return self._pool().submit(_local_task, fn, job)

    def wait(self, handles):
        done, _ = futures_wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for future in done:
            try:
                out.append((future, future.result()))
            except Exception as exc:  # BrokenProcessPool: the worker died (killed, out of memory)
                out.append((future, (FAILED, TaskFailure(type(exc).__name__, f"worker process died: {exc}"))))
        return out

    def cancel(self, handles):
        import signal

        self.stop.set()
        if self.pool is None:
            return
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            with contextlib.suppress(ProcessLookupError):  # reaches a worker whatever stopped the parent
                os.kill(proc.pid, signal.SIGINT)
        self.pool.shutdown(wait=True, cancel_futures=True)  # running tasks finish their own cleanup
        self.pool = None

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


class _Ray(_Backend):
    """Tasks on a Ray cluster (a local one for the duration when no ``address`` is given)."""

    remote = True

    def __init__(self, *, workers: int, threads: int, init: Callable | None, initargs: tuple,
                 address: str | None = None, gpus: float = 0, runtime_env: dict | None = None, **unknown):
        _no_unknown("ray", unknown)
        import ray

        self.ray = ray
        self.owned = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"runtime_env": runtime_env} if runtime_env else {}
            if address:
                kwargs["address"] = address
            else:  # a local cluster for the duration
                kwargs["include_dashboard"] = False
                kwargs["num_cpus"] = max(1, workers) * max(1, threads)
                # Ray starts its workers at niceness 15: beside any process at the default priority
                # they get a few percent of a core (the tests' Ray grid took 220-240 s instead of
                # 26-44 s beside another job, issue 34). The tasks are the work: normal priority.
                kwargs["_system_config"] = {"worker_niceness": 0}
                if gpus:
                    kwargs["num_gpus"] = int(max(1, workers) * gpus + 0.999)
            try:
                ray.init(**kwargs)
            except Exception as exc:  # one line for the terminal, not Ray's start-up traceback
                ray.shutdown()
                where = f"join the Ray cluster at {address}" if address else "start a local Ray"
                raise ConnectionError(f"could not {where}: {exc}") from exc
            self.owned = True
        self.threads = threads
        self.setup = None
        if init is not None:
            self.setup = (uuid.uuid4().hex, init, _InObjectStore(ray.put(tuple(initargs))))
        self.remote_fn = ray.remote(num_cpus=threads, num_gpus=gpus or 0, max_retries=0)(_run_task)

    def submit(self, fn, job):
        return self.remote_fn.remote(fn, job, self.threads, self.setup)

    def wait(self, handles):
        done: list = []
        while not done:  # short waits: a Ctrl-C is seen at once
            done, _ = self.ray.wait(handles, num_returns=1, timeout=1.0)
        out = []
        for ref in done:
            out.append((ref, self._get(ref)))
        return out

    def _get(self, ref) -> tuple:
        from ray import exceptions as rex

        try:
            return self.ray.get(ref)
        except rex.TaskCancelledError:
            return CANCELLED, None
        except rex.RayTaskError as exc:  # failed outside fn (e.g. unpickling the task)
            cause = getattr(exc, "cause", None) or exc
            return FAILED, TaskFailure(type(cause).__name__, str(cause), str(exc))
        except rex.RayError as exc:  # the worker died, the node went away
            return FAILED, TaskFailure(type(exc).__name__, f"ray worker lost: {exc}")

    def cancel(self, handles):
        for ref in handles:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=False)  # KeyboardInterrupt in a running task
        if not handles:
            return
        with contextlib.suppress(Exception):
            _, pending = self.ray.wait(handles, num_returns=len(handles), timeout=5)
            # a task the interrupt did not reach (its worker was still starting on a busy machine, or it
            # does not return to Python) is killed with its worker process
            for ref in pending:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
            if pending:
                self.ray.wait(pending, num_returns=len(pending), timeout=30)

    def close(self):
        if self.owned:
            self.ray.shutdown()


def parse_minutes(value: int | float | str | None) -> int | None:
    """A SLURM time limit in whole minutes (seconds round up), in SLURM's formats: ``90`` (minutes),
    ``"90"``, ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``, ``"D-HH:MM:SS"``."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        days, sep, rest = text.partition("-") if "-" in text else ("0", "", text)
        parts = [int(p) for p in rest.split(":")]
        if any(p < 0 for p in parts) or int(days) < 0 or len(parts) > 3:
            raise ValueError
        if sep:  # D-HH[:MM[:SS]]
            h, m, s = (parts + [0, 0])[:3]
        else:  # MM, MM:SS, HH:MM:SS
            h, m, s = ([0, 0] + parts)[-3:] if len(parts) == 3 else (0, parts[0], parts[1] if len(parts) == 2 else 0)
        minutes = int(days) * 24 * 60 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise ValueError(f"time must be minutes, MM:SS, HH:MM:SS or D-HH:MM:SS (got {value!r})") from None
    if minutes <= 0:
        raise ValueError(f"time must be positive (got {value!r})")
    return minutes


class _Slurm(_Backend):
    """One submitit job per task (SLURM, or submitit's local executor with ``cluster="local"``)."""

    remote = True

    def __init__(self, *, workers: int, threads: int, init: Callable | None, initargs: tuple,
                 partition: str | None = None, time: int | str | None = None, gpus: int = 0,
                 folder: str | os.PathLike | None = None, cluster: str = "slurm", slurm_options: dict | None = None,
                 poll_s: float = 1.0, **unknown):
        _no_unknown("slurm", unknown)
        import submitit

        if cluster not in ("slurm", "local"):
            raise ValueError(f"cluster must be 'slurm' or 'local' (got {cluster!r})")
        if folder is None:
            from epi_utils.workbench.runs import cache_dir

            folder = cache_dir() / "submitit"
        self.folder = Path(folder) / uuid.uuid4().hex[:12]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=cluster)
        params: dict[str, Any] = {"cpus_per_task": threads, "name": "epi"}
        minutes = parse_minutes(time)
        if minutes is not None:
            params["timeout_min"] = minutes
        if gpus:
            params["gpus_per_node"] = int(gpus)
        if partition:
            params["slurm_partition"] = partition
        params.update(slurm_options or {})
        self.executor.update_parameters(**params)
        self.threads, self.poll_s = threads, poll_s
        self.setup = None
        if init is not None:  # pickled once beside the jobs (each job is a fresh process)
            shared = self.folder / "shared_inputs.pkl"
            with open(shared, "wb") as handle:
                pickle.dump(tuple(initargs), handle)
            self.setup = (uuid.uuid4().hex, init, _Stored(str(shared)))

    def submit(self, fn, job):
        return self.executor.submit(_run_task, fn, job, self.threads, self.setup)

    def wait(self, handles):
        while True:
            done = [job for job in handles if job.done()]
            if done:
                return [(job, self._get(job)) for job in done]
            time.sleep(self.poll_s)

    @staticmethod
    def _get(job) -> tuple:
        try:
            return job.result()
        except Exception as exc:  # submitit's FailedJobError / UncompletedJobError: the job died or was cancelled
            state = str(getattr(job, "state", "")).upper()
            if "CANCEL" in state:
                return CANCELLED, None
            return FAILED, TaskFailure(type(exc).__name__, f"submitit job {job.job_id} ended without a result: "
                                       f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}", str(exc))

    def cancel(self, handles):
        for job in handles:
            with contextlib.suppress(Exception):
                job.cancel(check=False)


def _no_unknown(backend: str, unknown: dict) -> None:
    if unknown:
        raise ValueError(f"executor {backend!r} has no option(s) {sorted(unknown)}")


def _backend(executor: str, *, workers: int, threads: int, init, initargs, options: dict) -> _Backend:
    if executor == "local":
        _no_unknown("local", options)
        if workers == 1:
            return _Inline(init=init, initargs=initargs)
        return _Local(workers=workers, threads=threads, init=init, initargs=initargs)
    if executor == "ray":
        return _Ray(workers=workers, threads=threads, init=init, initargs=initargs, **options)
    if executor == "slurm":
        return _Slurm(workers=workers, threads=threads, init=init, initargs=initargs, **options)
    raise ValueError(f"executor must be one of {BACKENDS} (got {executor!r})")


def check_workers(workers: Any, *, what: str = "workers") -> int:
    """``workers`` as a positive ``int`` or a ``ValueError`` naming it."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"{what} must be a positive integer, got {workers!r}")
    return workers


# --------------------------------------------------------------------------- the one interface
class Tasks:
    """``fn(job)`` for every job on a backend; iterate for :class:`Outcome` s in finishing order.

    ::

        with Tasks(fn, jobs, executor="ray", workers=8) as tasks:
            for outcome in tasks:
                ...

    Leaving the block on an exception cancels every task in flight (see the module's docstring)
    and re-raises; ``tasks.outcomes`` holds what finished (``None`` for what never did).
    ``remote`` says whether results come back over the wire (``ray``, ``slurm``).
    """

    def __init__(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, executor: str = "local", workers: int = 1,
                 threads: int = 1, init: Callable | None = None, initargs: tuple = (), **backend_options):
        check_workers(workers)
        check_workers(threads, what="threads")
        self.fn, self.jobs = fn, list(jobs)
        self.executor = executor
        self.workers = workers
        self.outcomes: list[Outcome | None] = [None] * len(self.jobs)
        self._inflight: dict[Any, int] = {}
        self._backend = _backend(executor, workers=workers, threads=threads, init=init, initargs=tuple(initargs),
                                 options=backend_options)
        self.remote = self._backend.remote

    def __enter__(self) -> Tasks:
        return self

    def __iter__(self) -> Iterator[Outcome]:
        pending = list(range(len(self.jobs)))[::-1]
        while pending or self._inflight:
            while pending and len(self._inflight) < self.workers:
                i = pending.pop()
                self._inflight[self._backend.submit(self.fn, self.jobs[i])] = i
            for handle, result in self._backend.wait(list(self._inflight)):
                i = self._inflight.pop(handle)
                status, value = result[0], result[1]
                outcome = Outcome(i, status)
                if status == DONE:
                    outcome.value = value
                elif status == FAILED:
                    outcome.failure = value
                    outcome.exception = result[2] if len(result) > 2 else None
                self.outcomes[i] = outcome
                yield outcome

    def cancel(self) -> list[int]:
        """Cancel every task in flight; the indices of those that were."""
        cancelled = sorted(self._inflight.values())
        try:
            self._backend.cancel(list(self._inflight))
        finally:
            self._inflight.clear()
        return cancelled

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.cancel()
        finally:
            self._backend.close()


def map_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int = 1, threads: int = 1,
             init: Callable | None = None, initargs: tuple = (), executor: str = "local", desc: str = "runs",
             unit: str = "run", **backend_options) -> list:
    """``[fn(job) for job in jobs]`` on ``executor`` (``local``, ``ray`` or ``slurm``, see the module's
    docstring), with progress; results in job order, whichever finished first.

    ``workers`` tasks run at a time with ``threads`` torch threads each; ``init(*initargs)`` runs
    once per worker process before its first job (``local`` with ``workers=1``: once, here).
    The first failed job raises ``RuntimeError`` naming the job (its remote traceback chained as
    :class:`RemoteError`) after the others are cancelled; a Ctrl-C cancels them too.
    """
    from epi_utils.workbench.progress import progress

    check_workers(workers)
    jobs = list(jobs)
    results: list = [None] * len(jobs)
    with Tasks(fn, jobs, executor=executor, workers=min(workers, max(1, len(jobs))), threads=threads, init=init,
               initargs=initargs, **backend_options) as tasks:
        for outcome in progress(tasks, desc=desc, total=len(jobs), unit=unit):
            i = outcome.index
            if outcome.status == FAILED:
                cause = outcome.exception or RemoteError(outcome.failure.traceback or str(outcome.failure))
                raise RuntimeError(f"{desc}: job {i} ({jobs[i]!r}) failed in a worker: {outcome.failure}") from cause
            if outcome.status == CANCELLED:
                raise RuntimeError(f"{desc}: job {i} ({jobs[i]!r}) was cancelled")
            results[i] = outcome.value
    return results
