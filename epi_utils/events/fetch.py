"""Downloads of ChFinAnn: ``epi data fetch chfinann_full`` (Doc2EDAG's ``Data.zip``, into
``docee/chfinann_full``) and ``epi data fetch chfinann`` (the 1,424-document test subset, into
``docee/chfinann``). The two live in separate folders and are never read together.

Doc2EDAG (Zheng et al., EMNLP 2019) ships ``Data.zip`` (train 25,632 / dev 3,204 / test 3,204
documents, JSON arrays of ``[doc_id, doc]``) in the root of github.com/shun-zheng/Doc2EDAG.
:func:`fetch_chfinann` downloads it through the project's one fetcher
(:func:`epi_utils.workbench.datasets.download_file`, on pooch; ``file://`` mirrors included), checks its
SHA-256 when one is given, unpacks the JSON files into ``dest`` and writes the event schema
(``chfinann_event_schema.json``, shipped in ``epi_utils/events/schemas/``) beside them.
"""
from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Callable

from epi_utils.data.hashes import CHFINANN_SUBSET_SHA256
from epi_utils.workbench.datasets import download_file, sha256_file

DOC2EDAG_DATA_URL = "https://github.com/shun-zheng/Doc2EDAG/raw/master/Data.zip"
#: SHA-256 of Data.zip; not known here (the file could not be downloaded when this was written).
DOC2EDAG_DATA_SHA256: str | None = None
SCHEMA_RESOURCE = Path(__file__).with_name("schemas") / "chfinann_event_schema.json"


#: SHA-256 of the subset's files (``docee/chfinann`` of the shared copy): ``test_split{1..6}.jsonl`` are
#: byte copies of ``Data/test_split{1..6}.json`` of github.com/qinyan-li/DocEE at SUBSET_COMMIT; the schema
#: is the one shipped in ``epi_utils/events/schemas/`` under the name the shared copy uses.
SUBSET_COMMIT = "673b9dded09e32fe15943a0607d98d210ede2ede"
SUBSET_URL = f"https://raw.githubusercontent.com/qinyan-li/DocEE/{SUBSET_COMMIT}/Data/test_split{{i}}.json"


def fetch_chfinann_subset(dest: os.PathLike | str, *, url: str = SUBSET_URL,
                          downloader: Callable[[str, Path], None] | None = None) -> Path:
    """Download the 1,424-document subset into ``dest`` (``docee/chfinann``): each file is checked
    against :data:`CHFINANN_SUBSET_SHA256` (a mismatch deletes it and raises ``ValueError``)."""
    dest = Path(dest)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _fetch_subset_files(dest, url, downloader)
    except BaseException:
        if created and not any(dest.iterdir()):
            dest.rmdir()  # leave no empty folder behind a failed download
        raise
    shutil.copyfile(SCHEMA_RESOURCE, dest / "chfinann_event_schema.derived.json")
    return dest


def _fetch_subset_files(dest: Path, url: str, downloader) -> None:
    for i in range(1, 7):
        name = f"test_split{i}.jsonl"
        target = dest / name
        if target.exists() and sha256_file(target) == CHFINANN_SUBSET_SHA256[name]:
            continue
        if downloader is None:  # pooch: written atomically, refused (and deleted) on a hash mismatch
            download_file(url.format(i=i), target, sha256=CHFINANN_SUBSET_SHA256[name])
            continue
        part = dest / f".{name}.part"
        downloader(url.format(i=i), part)
        digest = sha256_file(part)
        if digest != CHFINANN_SUBSET_SHA256[name]:
            part.unlink(missing_ok=True)
            raise ValueError(f"sha256 of {url.format(i=i)} is {digest}, expected {CHFINANN_SUBSET_SHA256[name]}; "
                             "download deleted")
        os.replace(part, target)


def fetch_chfinann(dest: os.PathLike | str, *, url: str = DOC2EDAG_DATA_URL,
                   sha256: str | None = DOC2EDAG_DATA_SHA256,
                   downloader: Callable[[str, Path], None] | None = None, force: bool = False) -> Path:
    """Download and unpack ChFinAnn into ``dest`` (``$EPI_DATA_DIR/docee/chfinann_full``: its own
    folder, never the subset's ``docee/chfinann``, so no document is read twice).

    Returns ``dest``. Files already there are kept unless ``force``. A SHA-256 mismatch raises
    ``ValueError`` and deletes the download; with ``sha256=None`` the digest is printed and a
    warning says it was not checked. ``downloader(url, target_path)`` replaces
    :func:`~epi_utils.workbench.datasets.download_file` (tests pass a fake one). Load the result with
    ``load_documents(dest, load_schema(dest / "chfinann_event_schema.json"))``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = dest / ".fetched"
    if done.exists() and not force:
        return dest
    archive = dest / "Data.zip.part"
    try:
        (downloader or download_file)(url, archive)
    except BaseException:
        archive.unlink(missing_ok=True)
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()  # leave no empty folder behind a failed download
        raise
    digest = sha256_file(archive)
    if sha256 is not None and digest.lower() != sha256.lower():
        archive.unlink(missing_ok=True)
        raise ValueError(f"sha256 of {url} is {digest}, expected {sha256}; download deleted")
    if sha256 is None:
        warnings.warn(f"sha256 of {url} not checked (no known digest); it is {digest}", stacklevel=2)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith((".json", ".jsonl")) and not n.endswith("/")]
            if not names:
                raise ValueError(f"{url} holds no .json files; found {zf.namelist()[:10]}")
            for name in names:
                target = dest / Path(name).name
                with zf.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{url} is not a zip archive ({exc})") from None
    finally:
        archive.unlink(missing_ok=True)
    shutil.copyfile(SCHEMA_RESOURCE, dest / "chfinann_event_schema.json")
    done.write_text(f"{url}\nsha256 {digest}\n", encoding="utf-8")
    return dest
