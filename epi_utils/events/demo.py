"""The worked transfer example of README section 04: a second, differently shaped data set in
Doc2EDAG's layout, written to a folder so that the study runs on it exactly as on a user's data.

``python -m epi_utils.events.demo [FOLDER] [--docs N] [--seed S]`` writes ``documents.json`` (synthetic
documents with planted records, :mod:`.synthetic`) and the made-up schema
``transfer_demo_schema.json`` (4 event types with 2-6 roles, two of them with identical role lists,
one entity-only field) into ``FOLDER`` (default ``demo/transfer`` under the data folder, ``$EPI_DATA_DIR``); then::

    epi run notebooks/04_event_probes.ipynb -p data_subdir demo/transfer -p schema_file transfer_demo_schema.json

runs the study on it with the default schedules (no other parameter), and the profile
``transfer-smoke`` does the same at toy size.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from epi_utils.events.schema import load_schema
from epi_utils.events.synthetic import generate_documents
from epi_utils.workbench.runs import data_dir

SCHEMA_DIR = Path(__file__).with_name("schemas")
DEMO_SCHEMA = "transfer_demo_schema.json"
DEMO_SUBDIR = "demo/transfer"


def write_demo(folder: os.PathLike | str, *, n_docs: int = 600, seed: int = 0) -> Path:
    """Write ``n_docs`` synthetic documents (``documents.json``, a JSON array of ``[id, doc]``) and the
    demo schema into ``folder``; returns the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    schema_text = (SCHEMA_DIR / DEMO_SCHEMA).read_text(encoding="utf-8")
    raw = generate_documents(load_schema(SCHEMA_DIR / DEMO_SCHEMA), n_docs=n_docs, rng=np.random.default_rng(seed),
                             min_events=1, max_events=3, share_prob=0.3, id_prefix="demo")
    (out / "documents.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    (out / DEMO_SCHEMA).write_text(schema_text, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=None, help=f"output folder (default <data dir>/{DEMO_SUBDIR})")
    parser.add_argument("--docs", type=int, default=600, help="number of documents")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    args = parser.parse_args(argv)
    folder = args.folder or data_dir() / DEMO_SUBDIR
    out = write_demo(folder, n_docs=args.docs, seed=args.seed)
    print(f"wrote {args.docs} documents and {DEMO_SCHEMA} to {out}")
    return out


if __name__ == "__main__":
    main()
