"""Download of the full ChFinAnn release (Doc2EDAG's ``Data.zip``) for ``epi data fetch chfinann``.

Doc2EDAG (Zheng et al., EMNLP 2019) ships ``Data.zip`` (train 25,632 / dev 3,204 / test 3,204
documents, JSON arrays of ``[doc_id, doc]``) in the root of github.com/shun-zheng/Doc2EDAG.
:func:`fetch_chfinann` downloads it (any ``urllib`` URL, ``file://`` included), checks its
SHA-256 when one is given, unpacks the JSON files into ``dest`` and writes the event schema
(``chfinann_event_schema.json``, shipped in ``epi_utils/events/schemas/``) beside them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Callable

DOC2EDAG_DATA_URL = "https://github.com/shun-zheng/Doc2EDAG/raw/master/Data.zip"
#: SHA-256 of Data.zip; not known here (the file could not be downloaded when this was written).
DOC2EDAG_DATA_SHA256: str | None = None
SCHEMA_RESOURCE = Path(__file__).with_name("schemas") / "chfinann_event_schema.json"


def _urllib_download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as resp, open(target, "wb") as fh:  # noqa: S310
        shutil.copyfileobj(resp, fh, length=1 << 20)


def sha256_of(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_chfinann(dest: os.PathLike | str, *, url: str = DOC2EDAG_DATA_URL,
                   sha256: str | None = DOC2EDAG_DATA_SHA256,
                   downloader: Callable[[str, Path], None] | None = None, force: bool = False) -> Path:
    """Download and unpack ChFinAnn into ``dest`` (e.g. ``$EPI_DATA_DIR/docee/chfinann_full``).

    Returns ``dest``. Files already there are kept unless ``force``. A SHA-256 mismatch raises
    ``ValueError`` and deletes the download; with ``sha256=None`` the digest is printed and a
    warning says it was not checked. ``downloader(url, target_path)`` replaces the ``urllib``
    download (tests pass a fake one). Load the result with
    ``load_documents(dest, load_schema(dest / "chfinann_event_schema.json"))``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = dest / ".fetched"
    if done.exists() and not force:
        return dest
    archive = dest / "Data.zip.part"
    (downloader or _urllib_download)(url, archive)
    digest = sha256_of(archive)
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
