"""Document encoder, entity (NER) head and event-type detection (stage 1 of the pipeline).

Follows Doc2EDAG's front end (Zheng et al., EMNLP 2019): each sentence is encoded on its own
(characters -> Transformer encoder, trained from scratch; or a Hugging Face encoder given by id),
a BIO sequence-labelling head tags entity mentions with their field, sentences are max-pooled
into sentence vectors, and one attention-pooled logit per event type detects which types the
document holds. Shapes: ``N`` sentences in a batch, ``L`` characters, ``d`` hidden size,
``B`` documents, ``S`` sentences per document, ``T`` event types.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import torch
from torch import nn

from .data import Document


class CharVocab:
    """Characters -> ids; 0 is padding, 1 is unknown. Built from training sentences only."""

    def __init__(self, chars: Sequence[str]):
        self.itos = ["<pad>", "<unk>"] + list(chars)
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def build(cls, docs: Sequence[Document], *, min_freq: int = 1, max_size: int = 6000) -> "CharVocab":
        cnt = Counter(c for d in docs for s in d.sentences for c in s)
        chars = [c for c, n in cnt.most_common(max_size) if n >= min_freq]
        return cls(chars)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sentences: Sequence[str], *, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [N, L], mask [N, L])`` with ``L = min(max_len, longest sentence)`` (at least 1)."""
        L = max(1, min(max_len, max((len(s) for s in sentences), default=1)))
        ids = torch.zeros(len(sentences), L, dtype=torch.long)
        for i, s in enumerate(sentences):
            row = [self.stoi.get(c, 1) for c in s[:L]]
            if row:
                ids[i, :len(row)] = torch.tensor(row)
        return ids, ids != 0


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position codes (Vaswani et al., 2017): ``[..., dim]`` for integer positions."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half, 1))
    ang = positions.float().unsqueeze(-1) * freq
    out = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    return out if out.shape[-1] == dim else torch.nn.functional.pad(out, (0, dim - out.shape[-1]))


class CharTransformer(nn.Module):
    """Character + position embeddings, one residual 3-wide convolution, ``layers`` Transformer layers."""

    def __init__(self, vocab: CharVocab, *, dim: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.vocab, self.max_len, self.dim = vocab, max_len, dim
        self.emb = nn.Embedding(len(vocab), dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1)  # local n-gram features: faster NER learning
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.vocab.encode(sentences, max_len=self.max_len)
        dev = self.emb.weight.device
        ids, mask = ids.to(dev), mask.to(dev)
        x = self.emb(ids) + self.pos(torch.arange(ids.shape[1], device=dev))
        x = x + torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        empty = ~mask.any(1)
        pad = ~mask
        pad[empty, 0] = False  # an empty sentence attends to its padding instead of producing NaN
        return self.norm(self.enc(x, src_key_padding_mask=pad)), mask


class HFCharEncoder(nn.Module):
    """A Hugging Face encoder (e.g. ``bert-base-chinese``) whose token vectors are copied to the
    characters each token covers (fast tokenizer offsets), projected to ``dim``."""

    def __init__(self, name: str, *, dim: int, max_len: int):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(name, use_fast=True)
        self.model = AutoModel.from_pretrained(name)
        self.proj = nn.Linear(self.model.config.hidden_size, dim)
        self.max_len, self.dim = max_len, dim

    def forward(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.proj.weight.device
        texts = [s[:self.max_len] for s in sentences]
        L = max(1, max(len(s) for s in texts))
        enc = self.tok(texts, return_offsets_mapping=True, padding=True, truncation=True,
                       max_length=self.max_len + 2, return_tensors="pt")
        offsets = enc.pop("offset_mapping")
        hid = self.model(**{k: v.to(dev) for k, v in enc.items()}).last_hidden_state
        index = torch.zeros(len(texts), L, dtype=torch.long)
        for i in range(len(texts)):
            for j, (a, b) in enumerate(offsets[i].tolist()):
                if b > a:
                    index[i, a:min(b, L)] = j
        out = torch.gather(hid, 1, index.to(dev).unsqueeze(-1).expand(-1, -1, hid.shape[-1]))
        mask = torch.tensor([[c < len(s) for c in range(L)] for s in texts], device=dev)
        return self.proj(out), mask


class DocumentEncoder(nn.Module):
    """Sentence encoder + NER head + event-type detector.

    ``labels`` is the ordered entity field list; tag ids are 0 = O, ``1 + 2k`` = B-label k,
    ``2 + 2k`` = I-label k.
    """

    def __init__(self, vocab: CharVocab, labels: Sequence[str], num_types: int, *, dim: int = 64,
                 layers: int = 2, heads: int = 4, max_len: int = 128, max_sentences: int = 64,
                 dropout: float = 0.1, hf_name: str = ""):
        super().__init__()
        self.labels = list(labels)
        self.dim, self.max_sentences = dim, max_sentences
        if hf_name:
            self.sent = HFCharEncoder(hf_name, dim=dim, max_len=max_len)
        else:
            self.sent = CharTransformer(vocab, dim=dim, layers=layers, heads=heads, max_len=max_len, dropout=dropout)
        self.ner = nn.Linear(dim, 1 + 2 * len(self.labels))
        self.type_query = nn.Parameter(torch.randn(num_types, dim) / math.sqrt(dim))
        self.type_out = nn.Linear(dim, 1)
        self.spos = nn.Embedding(max_sentences, dim)

    def encode(self, docs: Sequence[Document]):
        """Encode every document as one character stream cut into windows of ``max_len``.

        The sentences of a document are concatenated (a window may span sentences, giving
        cross-sentence context, and no compute is spent on padding short sentences). Returns
        ``X [B, Lmax, d]`` character vectors, ``xmask [B, Lmax]``, ``sent_vec [B, S, d]``
        (max-pooled sentences + sentence-position embedding), ``sent_mask [B, S]`` and ``starts``:
        per document the stream offset of each sentence.
        """
        W = self.sent.max_len
        texts, starts, windows = [], [], []
        for d in docs:
            st, pos = [], 0
            for sent in d.sentences:
                st.append(pos)
                pos += len(sent)
            starts.append(st)
            text = "".join(d.sentences)
            texts.append(text)
            windows.extend(text[i:i + W] for i in range(0, max(len(text), 1), W))
        H, _ = self.sent(windows)
        if H.shape[1] < W:
            H = torch.nn.functional.pad(H, (0, 0, 0, W - H.shape[1]))
        Lmax = max(1, max(len(t) for t in texts))
        X = H.new_zeros(len(docs), Lmax, self.dim)
        xmask = torch.zeros(len(docs), Lmax, dtype=torch.bool, device=H.device)
        row = 0
        for b, text in enumerate(texts):
            n_win = max(1, -(-len(text) // W))
            flat = H[row:row + n_win].reshape(-1, self.dim)[:len(text)]
            X[b, :len(text)], xmask[b, :len(text)] = flat, True
            row += n_win
        S = max(1, max(len(st) for st in starts))
        seg = torch.full((len(docs), Lmax), S, dtype=torch.long, device=H.device)
        for b, (d, st) in enumerate(zip(docs, starts)):
            for s_i, (a, sent) in enumerate(zip(st, d.sentences)):
                seg[b, a:a + len(sent)] = s_i
        pooled = H.new_full((len(docs), S + 1, self.dim), -1e4)
        pooled = pooled.scatter_reduce(1, seg.unsqueeze(-1).expand(-1, -1, self.dim), X, reduce="amax", include_self=True)
        sent_mask = torch.zeros(len(docs), S, dtype=torch.bool, device=H.device)
        for b, d in enumerate(docs):
            sent_mask[b, :len(d.sentences)] = True
        sent_vec = pooled[:, :S].clamp(min=-1e3) * sent_mask.unsqueeze(-1)
        sent_vec = sent_vec + self.spos(torch.arange(S, device=H.device).clamp(max=self.max_sentences - 1))
        return X, xmask, sent_vec, sent_mask, starts

    def type_logits(self, sent_vec: torch.Tensor, sent_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` event-type logits from attention pooling over sentences (one query per type)."""
        att = torch.einsum("bsd,td->bts", sent_vec, self.type_query) / math.sqrt(self.dim)
        att = att.masked_fill(~sent_mask.unsqueeze(1), -1e4).softmax(-1)
        return self.type_out(torch.einsum("bts,bsd->btd", att, sent_vec)).squeeze(-1)

    def sentence_type_scores(self, sent_vec: torch.Tensor) -> torch.Tensor:
        """``[B, S, T]`` per-sentence attention logits of the type detector (sentence-level type evidence)."""
        return torch.einsum("bsd,td->bst", sent_vec, self.type_query) / math.sqrt(self.dim)

    def tag_targets(self, docs: Sequence[Document], starts, L: int) -> torch.Tensor:
        """Gold BIO tag ids ``[B, L]`` over each document's character stream (-100 on padding)."""
        tags = torch.full((len(docs), L), -100, dtype=torch.long)
        for b, (d, st) in enumerate(zip(docs, starts)):
            n = sum(len(x) for x in d.sentences)
            tags[b, :n] = 0
            for m, rgs in d.mentions.items():
                field = d.fields.get(m, "")
                if field not in self.labels:
                    continue
                k = self.labels.index(field)
                for s, a, e in rgs:
                    tags[b, st[s] + a] = 1 + 2 * k
                    tags[b, st[s] + a + 1:st[s] + e] = 2 + 2 * k
        return tags

    def decode_mentions(self, docs: Sequence[Document], tag_ids: torch.Tensor, starts) -> list[dict]:
        """Greedy BIO decoding (within sentences) -> per document ``{mention: (field, [(s, a, b), ...])}``."""
        out = []
        tag_ids = tag_ids.cpu().tolist()
        for b, (d, st) in enumerate(zip(docs, starts)):
            found: dict[str, tuple[str, list]] = {}
            for s, sent in enumerate(d.sentences):
                tags = tag_ids[b][st[s]:st[s] + len(sent)]
                c = 0
                while c < len(sent):
                    t = tags[c]
                    if t == 0:
                        c += 1
                        continue
                    k = (t - 1) // 2
                    e = c + 1
                    while e < len(sent) and tags[e] == 2 + 2 * k:
                        e += 1
                    m = sent[c:e]
                    entry = found.setdefault(m, (self.labels[k], []))
                    entry[1].append((s, c, e))
                    c = e
            out.append(found)
        return out
