"""Runs: seeds, devices, folders, provenance and crash-safe metric files.

A *run* is one execution of a study notebook. The runner (:mod:`epi_utils.workbench.report`) creates
``reports/<study>/<run-id>/`` and exports its path in the environment variable ``EPI_RUN_DIR``
before the notebook starts; code inside the notebook finds it with :func:`current_run_dir`.
A notebook opened by hand in JupyterLab has no such variable and writes to
``reports/_interactive/`` instead, so interactive work never overwrites a batch run.

Files in a run folder:

``results.json``   headline numbers written by the notebook itself (:func:`save_metrics`).
``metrics.json``   written by the runner: provenance + status + the headline numbers. It is
                   written with ``status: "running"`` before execution and replaced atomically
                   at the end, so a killed run never leaves a file that claims success.
``figures/``       PNG and PDF figures (:func:`epi_utils.workbench.plots.save_figure`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time as _time
from pathlib import Path
from typing import Any, Mapping, Sequence

from epi_utils.workbench.params import ParameterError

RUN_DIR_ENV = "EPI_RUN_DIR"
DATA_DIR_ENV = "EPI_DATA_DIR"
CACHE_DIR_ENV = "EPI_CACHE_DIR"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
#: seeds are below 2**31 (StudyConfig's bound; NumPy, torch and CUDA generators all take them)
MAX_SEED = 2**31


def repo_root() -> Path:
    """The repository root: the folder holding ``pyproject.toml`` above this package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent, *here.parents):
        if (candidate / "pyproject.toml").exists() and (candidate / "epi_utils").is_dir():
            return candidate
    return Path.cwd()


def data_dir(root: Path | None = None) -> Path:
    """Where data sets live: ``$EPI_DATA_DIR`` when set; else ``../shared/data`` beside the repository
    when that folder exists (this project's machines and CI); else ``<repo>/data``. The Makefile
    applies the same rule, so a command typed outside ``make`` reads the same data as one inside it.
    ``root`` replaces the repository root (tests)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    root = Path(root) if root is not None else repo_root()
    shared = root.parent / "shared" / "data"
    return shared.resolve() if shared.is_dir() else root / "data"


def data_dir_candidates(root: Path | None = None) -> list[Path]:
    """The folders :func:`data_dir` chooses among when ``$EPI_DATA_DIR`` is unset, in order (for
    messages that say where data was looked for)."""
    root = Path(root) if root is not None else repo_root()
    return [root.parent / "shared" / "data", root / "data"]


#: a run folder's list of the data files its run read (one JSON object per line; merged into metrics.json)
DATA_FILES = "data_files.jsonl"
_HASHED: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_data_file(path: os.PathLike | str) -> str | None:
    """Note that the current run reads the data file ``path``: its SHA-256 and size go to
    ``<run>/data_files.jsonl``, which the runner merges into ``metrics.json`` under ``data_files``
    (with ``ok`` / ``corrupt`` / ``unknown hash`` against the registry's known hashes). Returns the
    digest; outside a batch run (no ``$EPI_RUN_DIR``: a notebook in Lab, a test) nothing is hashed or
    written and ``None`` is returned.

    :func:`epi_utils.workbench.datasets.require_dataset` and ``require_folder`` call it for every file
    they hand out; a study that opens data files another way calls it once per file it reads."""
    folder = os.environ.get(RUN_DIR_ENV)
    if not folder:
        return None
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _HASHED.get(key) or _HASHED.setdefault(key, _sha256(path))
    line = json.dumps({"path": str(path), "sha256": digest, "bytes": st.st_size})
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / DATA_FILES, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return digest


def read_data_files(run_dir: os.PathLike | str) -> dict[str, dict[str, Any]]:
    """``{path: {"sha256", "bytes"}}`` of the data files a run recorded (:func:`record_data_file`),
    paths under the run's data folder written as ``$EPI_DATA_DIR/<relative path>``."""
    out: dict[str, dict[str, Any]] = {}
    try:
        lines = (Path(run_dir) / DATA_FILES).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    base = data_dir()
    for line in lines:
        try:
            item = json.loads(line)
            path = Path(item["path"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a killed kernel
        name = f"$EPI_DATA_DIR/{path.relative_to(base).as_posix()}" if path.is_relative_to(base) else str(path)
        out[name] = {"sha256": item.get("sha256"), "bytes": item.get("bytes")}
    return dict(sorted(out.items()))


def cache_dir() -> Path:
    """Where derived artefacts (pretrained tiny models, fp32 model copies) are cached:
    ``$EPI_CACHE_DIR``, else ``<repo>/.cache``. Created on first use."""
    env = os.environ.get(CACHE_DIR_ENV)
    path = Path(env).expanduser().resolve() if env else repo_root() / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_run_dir() -> Path:
    """The folder of the run this code executes in (``$EPI_RUN_DIR``), created if needed.

    Outside a batch run (a notebook opened by hand) this is ``reports/_interactive``.
    """
    env = os.environ.get(RUN_DIR_ENV)
    path = Path(env) if env else repo_root() / "reports" / "_interactive"
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) with ``seed``.

    Also sets ``PYTHONHASHSEED`` for child processes. Functions that sample still take an
    explicit ``rng``/``generator`` argument; this only fixes global state for a run.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a pinned requirement
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _device_name(device: str) -> str:
    """``device`` lower-cased and stripped, or the ``ValueError`` for a name that is no device."""
    if not isinstance(device, str):
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    name = device.strip().lower()
    if name in ("auto", "cpu", "cuda") or name.startswith("cuda:"):
        return name
    raise ValueError(f"device must be one of {DEVICE_CHOICES} (or 'cuda:N'), got {device!r}")


def check_device(device: str) -> None:
    """The ``ValueError`` :func:`resolve_device` would raise for ``device``, importing torch only to
    ask for CUDA (``cpu`` and ``auto`` always resolve): a runner's preflight, run by every ``epi run``
    and every sweep worker, no longer pays torch's import (about 3 s of CPU, issue 34)."""
    if _device_name(device).startswith("cuda"):
        resolve_device(device)


def resolve_device(device: str = "auto"):
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a ``torch.device``.

    ``auto`` picks CUDA when available, else CPU. Asking for CUDA on a machine without it
    raises a ``ValueError`` instead of silently falling back.
    """
    name = _device_name(device)
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


def atomic_write_json(path: os.PathLike | str, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file in the same folder, then rename).

    NaN and infinity are written as ``null`` so the file stays valid JSON.
    """
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file in the same folder, flushed to
    disk, then renamed over ``path``. A failure (a full disk) leaves the old file as it was and no
    temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_safe(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and non-finite floats to plain JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch
        return _json_safe(obj.tolist())
    if hasattr(obj, "item"):
        return _json_safe(obj.item())
    return str(obj)


def save_metrics(metrics: Mapping[str, Any], *, headlines: Sequence[str] = (),
                 timings: Mapping[str, float] | None = None,
                 run_dir: os.PathLike | str | None = None) -> None:
    """Record a notebook's numbers for its run (``results.json``, written atomically).

    ``metrics`` is a (possibly nested) mapping of names to numbers, lists or strings, e.g.
    ``{"epi": {"seq_acc": 0.61, "seq_acc_ci95": [0.55, 0.66]}}``. The runner merges it into the
    run's ``metrics.json`` under ``"metrics"``. ``headlines``: the few flattened metric names
    (``"epi.seq_acc"``) the index shows for this study; each must exist in ``metrics``.
    ``timings``: seconds spent (per run, per stage): provenance, kept out of ``metrics`` so that no
    sweep computes an interval of wall time. Calling it again replaces the earlier numbers.
    Returns nothing, so a notebook cell ending with it shows no stray output.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> value, got {type(metrics).__name__}")
    flat = flatten_leaves(metrics)
    unknown = [h for h in headlines if h not in flat]
    if unknown:
        raise KeyError(f"headline(s) {unknown} not among the metrics; flattened names are "
                       f"{sorted(flat)[:40]}")
    folder = Path(run_dir) if run_dir is not None else current_run_dir()
    atomic_write_json(folder / "results.json", {"metrics": dict(metrics), "headlines": list(headlines),
                                                 "timings": dict(timings or {})})


def flatten_leaves(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_leaves(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the repository.

    Dirty means a file outside ``reports/`` differs from the commit: a tracked file changed, or an
    untracked file that git does not ignore (a new notebook or module a run may have used). The
    outputs under ``reports/`` (e.g. ``reports/published/`` refreshed by ``epi publish``) cannot
    change a result."""
    root = root or repo_root()
    try:  # generous timeouts: git on a loaded machine can take seconds
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=60)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", ".",
                                 ":(exclude)reports"], cwd=root,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    if sha.returncode != 0:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": sha.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def library_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries results depend on."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "numpy", "papermill", "epi_utils"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def cpu_model() -> str:
    """The CPU's model name and widest x86 vector extension (``avx512f``, ``avx2``) from
    ``/proc/cpuinfo`` (else ``platform.processor()``). The same code and seed give other floats on
    another kind of CPU (torch's and MKL's kernels sum in another order), so a run says which it had."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    first = {}  # the first CPU's fields
    for ln in text.splitlines():
        key, _, value = ln.partition(":")
        first.setdefault(key.strip(), value.strip())
    model, flags = first.get("model name", ""), set(first.get("flags", "").split())
    simd = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "")
    return ", ".join(x for x in (model or platform.machine(), simd) if x)


def provenance(*, device: str = "auto") -> dict[str, Any]:
    """Everything needed to say where a number came from: git state, versions, host, threads."""
    info: dict[str, Any] = dict(git_state())
    info["versions"] = library_versions()
    info["host"] = platform.node()
    info["platform"] = platform.platform()
    info["cpu_count"] = os.cpu_count()
    info["cpu"] = cpu_model()
    try:
        info["threads"] = torch_threads()
        if not device or str(device).strip().lower() == "cpu":
            info["device"] = "cpu"  # no torch needed to say so (see torch_threads)
        else:
            import torch

            info["device"] = str(resolve_device(device))
            if info["device"].startswith("cuda"):
                info["device_name"] = torch.cuda.get_device_name(0)
    except (ImportError, ValueError) as exc:
        info["threads"] = None
        info["device"] = f"unresolved ({exc})"
    return info


def torch_threads() -> int:
    """``torch.get_num_threads()`` as torch in this process reports (or would report) it.

    Without importing torch where the environment pins one thread (``MKL_NUM_THREADS=1``, or
    ``OMP_NUM_THREADS=1`` and no ``MKL_NUM_THREADS``: torch reads MKL's variable after OMP's and
    always honours 1): the import costs a runner or a sweep worker that never uses torch itself
    about 3 s of CPU (issue 34). Any other setting is torch's to interpret (it caps larger values
    at the machine's cores, for one), so torch is asked."""
    torch = sys.modules.get("torch")
    if torch is None:
        mkl, omp = os.environ.get("MKL_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")
        if mkl == "1" or (mkl is None and omp == "1"):
            return 1
        import torch
    return torch.get_num_threads()


def utc_now() -> str:
    """The current UTC time in ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def new_run_id(*, profile: str, parameters: Mapping[str, Any] | None = None) -> str:
    """A sortable, unique run folder name: ``YYYYmmdd-HHMMSS-<profile>[-seedN]-<4 hex>``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    seed = (parameters or {}).get("seed")
    seed_part = f"-seed{seed}" if seed is not None else ""
    return f"{stamp}-{profile}{seed_part}-{os.urandom(2).hex()}"


#: what a run id, profile name or other name that becomes part of a path may hold
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_name(value: str, *, what: str) -> str:
    """``value`` if it is a safe path component (only ``[A-Za-z0-9._-]``, not starting with a dot),
    else ``ValueError`` naming ``what``: a run id or profile never reaches outside its folder."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or value.startswith("."):
        raise ValueError(f"{what} {value!r} is not allowed: use only letters, digits, '.', '_' and '-', "
                         "not starting with '.'")
    return value


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start_token(pid: int) -> str | None:
    """A token that differs between two processes that had the same ``pid``: the boot id and the
    process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22). ``None`` where
    there is no ``/proc`` or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else None


def runner_identity() -> dict[str, Any]:
    """``{"runner_pid", "runner_host", "runner_start"}`` of this process, for ``metrics.json``."""
    return {"runner_pid": os.getpid(), "runner_host": platform.node(),
            "runner_start": process_start_token(os.getpid())}


def runner_alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the runner that wrote a ``running`` record still runs: ``False`` when its process is
    gone, or its PID now belongs to another process (start token differs); ``None`` when the run was
    started on another host (it cannot be checked from here, so it is not shown as running)."""
    pid = record.get("runner_pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    host = record.get("runner_host")
    if host is not None and host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    token = record.get("runner_start")
    if token is not None and process_start_token(pid) not in (None, token):
        return False  # the PID was reused by a later process
    return True


def _parameter_error(message: str) -> Exception:
    return ParameterError(message)


def check_run_request(*, profile: str, overrides: Mapping[str, Any] | None, run_id: str | None) -> None:
    """Refuse, before anything runs, a profile or run id that is not a plain name (it becomes a
    path) and ``-p profile ...`` (the profile is chosen by ``--profile``)."""
    check_name(profile, what="profile")
    if run_id is not None:
        check_name(run_id, what="run id")
    if overrides and "profile" in overrides:
        raise _parameter_error("'profile' cannot be set with -p; choose the profile with --profile NAME")


def preflight(parameters: Mapping[str, Any]) -> None:
    """Checks of the parameters every notebook shares that can fail before a kernel starts, on the
    values a profile or an override sets (the notebook's defaults are checked by its conventions):
    ``seed`` is a non-negative integer and ``device`` exists on this machine."""
    if "seed" in parameters:
        seed = parameters["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise _parameter_error(f"parameter 'seed' must be a non-negative integer, got {seed!r}")
        if seed >= MAX_SEED:
            raise _parameter_error(f"parameter 'seed' must be below 2**31 = {MAX_SEED}, got {seed}")
    if "device" in parameters:
        try:
            check_device(str(parameters["device"]))
        except ValueError as exc:
            raise _parameter_error(f"parameter 'device': {exc}") from None


def remove_empty_dirs(run_dir: Path) -> None:
    """Delete empty folders inside ``run_dir`` (an unused ``figures/``)."""
    for sub in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(sub.iterdir()):
            sub.rmdir()


def mark_interrupted(run_dir: Path, *, record: dict[str, Any] | None = None, started: float | None = None) -> None:
    """Write ``status: interrupted`` into a run's ``metrics.json`` (if it still says ``running``)
    and remove its empty folders."""
    path = Path(run_dir) / "metrics.json"
    if record is None:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
    if record is not None and record.get("status") == "running":
        record["status"] = "interrupted"
        record["error"] = {"type": "KeyboardInterrupt", "message": "interrupted (Ctrl-C) before the notebook finished"}
        record["finished_at"] = utc_now()
        if started is not None:
            record["wall_time_s"] = round(_time.time() - started, 2)
        record.pop("runner_pid", None)
        atomic_write_json(path, record)
    if Path(run_dir).is_dir():
        remove_empty_dirs(Path(run_dir))
