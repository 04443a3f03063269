"""FewAsp loader, validation and download (Hu et al., "Multi-Label Few-Shot Learning for Aspect
Category Detection", ACL 2021, https://aclanthology.org/2021.acl-long.495 -- cite it when using the data).

Layout under ``root`` (``$EPI_DATA_DIR/fewasp``)::

    FewAsp(single)/{train,val,test}.json
    FewAsp(multi)/{train,val,test}.json
    FewAsp/{train,val,test}.json
    separate.json          {"train": [64 names], "validation": [16], "test": [20]}

Each split file is one JSON object ``{aspect_category: [instance, ...]}``; an instance is
``[tokens, aspects]`` with ``tokens`` a list of lower-cased strings and ``aspects`` the list of
*all* categories of the sentence (the key is one of them). A multi-label sentence appears under
several keys; :class:`FewAspSplit` de-duplicates sentences so that an episode sampler can keep a
sentence out of both the support and the query set.

Validation (:func:`parse_split`) raises :class:`FewAspFormatError` naming the file and the
category for: a key category missing from an instance's aspect list, an empty sentence, an aspect
outside the split's classes, or the same sentence listed with two different aspect sets.
A missing split file raises :class:`FewAspMissingError` that says to run ``epi data fetch fewasp``
(:func:`fetch_fewasp`, registered in ``epi_utils.workbench.datasets``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from epi_utils.data.hashes import FEWASP_SHA256
from epi_utils.workbench.datasets import download_file, sha256_file
from epi_utils.workbench.runs import data_dir, record_data_file

DATASETS = ("FewAsp(single)", "FewAsp(multi)", "FewAsp")
SPLITS = ("train", "val", "test")
_SEPARATE_KEY = {"train": "train", "val": "validation", "test": "test"}

#: sha256 of the files whose content is known (SOURCE.md of the shared copy). The two large
#: train files of FewAsp(multi) and FewAsp were never seen here, so they have no reference hash.
SHA256: dict[str, str] = FEWASP_SHA256  # declared in epi_utils.data.hashes (the registry reads it there)

#: Where :func:`fetch_fewasp` looks, in order. The first is the official repository of the paper
#: (its folder name ``data`` is an assumption: the repository could not be inspected from here);
#: the second is the LDF repository (Zhao et al. 2022) at the commit whose files match SHA256 above.
MIRRORS: tuple[str, ...] = (
    "https://raw.githubusercontent.com/hmt2014/FewAsp/main/data",
    "https://raw.githubusercontent.com/1429904852/LDF/ee822dac84ede4c29d0eaaede1c33bdb39c75619/dataset",
)


class FewAspError(ValueError):
    """Base class of FewAsp data problems."""


class FewAspFormatError(FewAspError):
    """A split file breaks the FewAsp format; the message names the file and the category."""


class FewAspMissingError(FewAspError, FileNotFoundError):
    """A split file is absent; the message names it and says how to get it."""


@dataclass
class FewAspSplit:
    """One split with de-duplicated sentences.

    ``sentences[i]``: tuple of tokens; ``aspects[i]``: frozenset of its categories;
    ``by_class[c]``: int array of the sentence ids listed under key ``c`` (the instances of ``c``).
    """

    name: str
    classes: list[str]
    sentences: list[tuple[str, ...]]
    aspects: list[frozenset[str]]
    by_class: dict[str, np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def n_instances(self) -> int:
        return int(sum(len(v) for v in self.by_class.values()))

    def label_counts(self) -> np.ndarray:
        """Number of aspects of each sentence, shape ``(n_sentences,)``."""
        return np.array([len(a) for a in self.aspects], dtype=int)


def parse_split(obj: object, *, source: str, classes: Sequence[str] | None = None) -> FewAspSplit:
    """Validate a decoded split object and build a :class:`FewAspSplit`.

    ``source`` names the file in error messages; ``classes``, if given, is the class list the
    split must have (from ``separate.json``). Raises :class:`FewAspFormatError`.
    """
    if not isinstance(obj, dict) or not obj:
        raise FewAspFormatError(f"{source}: expected a non-empty JSON object {{category: [instances]}}, "
                                f"got {type(obj).__name__}")
    keys = [str(k) for k in obj]
    if classes is not None and set(keys) != set(classes):
        extra, missing = sorted(set(keys) - set(classes)), sorted(set(classes) - set(keys))
        raise FewAspFormatError(f"{source}: categories differ from separate.json: "
                                f"extra {extra[:5]}, missing {missing[:5]}")
    allowed = set(keys)
    index: dict[tuple[str, ...], int] = {}
    sentences: list[tuple[str, ...]] = []
    aspects: list[frozenset[str]] = []
    by_class: dict[str, list[int]] = {}
    for cat, instances in obj.items():
        if not isinstance(instances, list) or not instances:
            raise FewAspFormatError(f"{source}: category {cat!r} must map to a non-empty list of instances")
        ids = by_class.setdefault(cat, [])
        for j, inst in enumerate(instances):
            where = f"{source}: category {cat!r}, instance {j}"
            if not (isinstance(inst, (list, tuple)) and len(inst) == 2):
                raise FewAspFormatError(f"{where}: expected [tokens, aspects]")
            tokens, asp = inst
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise FewAspFormatError(f"{where}: tokens must be a list of strings")
            if not [t for t in tokens if t.strip()]:
                raise FewAspFormatError(f"{where}: empty sentence")
            if not isinstance(asp, list) or not asp:
                raise FewAspFormatError(f"{where}: aspects must be a non-empty list")
            if cat not in asp:
                raise FewAspFormatError(f"{where}: key category {cat!r} is not in the instance's aspects {asp}")
            outside = sorted(set(asp) - allowed)
            if outside:
                raise FewAspFormatError(f"{where}: aspect(s) {outside} are not classes of this split")
            key, aset = tuple(tokens), frozenset(asp)
            sid = index.get(key)
            if sid is None:
                sid = index[key] = len(sentences)
                sentences.append(key)
                aspects.append(aset)
            elif aspects[sid] != aset:
                raise FewAspFormatError(f"{where}: the same sentence is listed elsewhere with aspects "
                                        f"{sorted(aspects[sid])}, here {sorted(aset)}")
            ids.append(sid)
    return FewAspSplit(name=source, classes=list(keys), sentences=sentences, aspects=aspects,
                       by_class={c: np.asarray(v, dtype=np.int64) for c, v in by_class.items()})


def _root(root: os.PathLike | str | None) -> Path:
    if root is not None:
        return Path(root)
    return data_dir() / "fewasp"


def remedies(folder: Path) -> str:
    """The two ways to get FewAsp, naming the folder that was searched."""
    return (f"either set EPI_DATA_DIR to a folder whose fewasp/ holds the files (searched: {folder}), or run "
            f"`epi data fetch fewasp` to download them into {folder}")


def load_class_split(root: os.PathLike | str | None = None) -> dict[str, list[str]]:
    """``separate.json`` as ``{"train": [...], "val": [...], "test": [...]}``."""
    path = _root(root) / "separate.json"
    if not path.exists():
        raise FewAspMissingError(f"{path} is missing; {remedies(path.parent)}")
    record_data_file(path)
    raw = json.loads(path.read_text())
    try:
        return {s: list(raw[_SEPARATE_KEY[s]]) for s in SPLITS}
    except KeyError as err:
        raise FewAspFormatError(f"{path}: missing key {err}; expected train, validation, test") from None


def split_path(dataset: str, split: str, *, root: os.PathLike | str | None = None) -> Path:
    """Path of ``<root>/<dataset>/<split>.json``; validates the names."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _root(root) / dataset / f"{split}.json"


def has_split(dataset: str, split: str, *, root: os.PathLike | str | None = None) -> bool:
    """Whether the split file exists (a partial copy may lack some, e.g. the train.json of FewAsp(multi))."""
    return split_path(dataset, split, root=root).exists()


def load_split(dataset: str, split: str, *, root: os.PathLike | str | None = None,
               check_classes: bool = True) -> FewAspSplit:
    """Load and validate one split, e.g. ``load_split("FewAsp(single)", "train")``.

    Raises :class:`FewAspMissingError` for an absent file and :class:`FewAspFormatError` for a
    malformed one. With ``check_classes`` the categories must equal ``separate.json``'s.
    """
    path = split_path(dataset, split, root=root)
    if not path.exists():
        raise FewAspMissingError(f"{dataset}/{split}.json is missing: no file {path}; {remedies(path.parent.parent)}")
    record_data_file(path)
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise FewAspFormatError(f"{path}: not valid JSON ({err})") from None
    classes = None
    if check_classes and (path.parent.parent / "separate.json").exists():
        classes = load_class_split(path.parent.parent)[split]
    return parse_split(obj, source=f"{dataset}/{split}.json", classes=classes)


# ----------------------------------------------------------------------------------------- fetch
def _download_bytes(url: str) -> bytes:
    """One file through the project's one fetcher (:func:`~epi_utils.workbench.datasets.download_file`,
    on pooch), as bytes; the mirror loop of :func:`download_fewasp` checks the hash."""
    with tempfile.TemporaryDirectory() as tmp:
        return download_file(url, Path(tmp) / "download").read_bytes()


def fetch_fewasp(dest: os.PathLike | str | None = None, **options) -> Path:
    """``epi data fetch fewasp``: download FewAsp into ``<dest>/fewasp`` (``dest`` defaults to
    ``$EPI_DATA_DIR``) with :func:`download_fewasp` and return that folder. ``options`` go to
    :func:`download_fewasp` (``mirrors``, ``downloader``, ``overwrite``, ``hashes``)."""
    if dest is None:
        dest = data_dir()
    root = Path(dest) / "fewasp"
    download_fewasp(root, **options)
    return root


def download_fewasp(dest: os.PathLike | str, *, mirrors: Sequence[str] = MIRRORS,
                    downloader: Callable[[str], bytes] | None = None, overwrite: bool = False,
                    hashes: Mapping[str, str] = SHA256) -> dict[str, dict[str, str]]:
    """Download ``separate.json`` and the 9 split files of the three FewAsp datasets into the
    FewAsp folder ``dest`` (the one holding ``separate.json``).

    Each file is tried at every mirror in order; a download whose sha256 differs from ``hashes``
    (where known) is rejected and the next mirror tried. Files without a reference hash are
    accepted if they parse as a valid FewAsp split. Existing files with the right hash are kept
    unless ``overwrite``. ``downloader(url) -> bytes`` is replaceable (tests pass a fake).
    Returns ``{relative path: {"sha256": ..., "source": url or "existing", "verified": "yes"|"no-reference"}}``
    and writes it to ``dest/FETCHED.json``. Raises :class:`FewAspError` when a file cannot be had.
    """
    dest = Path(dest)
    get = downloader or _download_bytes
    wanted = ["separate.json"] + [f"{d}/{s}.json" for d in DATASETS for s in SPLITS]
    report: dict[str, dict[str, str]] = {}
    for rel in wanted:
        target = dest / rel
        ref = hashes.get(rel)
        if target.exists() and not overwrite and (ref is None or sha256_file(target) == ref):
            report[rel] = {"sha256": sha256_file(target), "source": "existing",
                           "verified": "yes" if ref else "no-reference"}
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + urllib.parse.quote(rel)
            try:
                data = get(url)
            except Exception as err:  # network errors differ by backend; keep trying mirrors
                errors.append(f"{url}: {type(err).__name__}: {err}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if ref is not None and digest != ref:
                errors.append(f"{url}: sha256 {digest} != expected {ref}")
                continue
            if ref is None and rel != "separate.json":
                try:
                    parse_split(json.loads(data), source=url)
                except (ValueError, FewAspFormatError) as err:
                    errors.append(f"{url}: invalid FewAsp file ({err})")
                    continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)
            report[rel] = {"sha256": digest, "source": url, "verified": "yes" if ref else "no-reference"}
            break
        else:
            raise FewAspError(f"could not fetch {rel}: " + "; ".join(errors))
    (dest / "FETCHED.json").write_text(json.dumps(report, indent=2))
    return report
