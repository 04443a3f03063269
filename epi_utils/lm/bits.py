"""Packed bit sets (one copy for ``lm`` and ``isolation``): element ``i`` of a set of ``n`` is bit
``i % 8`` (least significant first) of byte ``i // 8`` of a uint8 ``(ceil(n / 8),)`` tensor: what
``epi_utils.isolation.state``'s critical sets store and ``epi_utils.lm.fused_kernels`` reads."""
from __future__ import annotations

import math

import torch

_PACK = 0x0102040810204080              # gathers the low bit of 8 bytes into the top byte


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``(n,)`` (any shape, flattened) -> uint8 ``(ceil(n / 8),)``; element ``i`` is bit
    ``i % 8`` of byte ``i // 8``. One int64 multiply per 8 elements."""
    m = mask.reshape(-1)
    if m.dtype != torch.bool:
        raise ValueError(f"pack_bits needs a bool tensor, got {m.dtype}")
    pad = (-m.numel()) % 8
    if pad:
        m = torch.cat([m, m.new_zeros(pad)])
    words = m.contiguous().view(torch.int64)
    return (words * _PACK).bitwise_right_shift_(56).bitwise_and_(0xFF).to(torch.uint8)


_ROWS: dict = {}


def _byte_rows(device) -> torch.Tensor:
    """int64 ``(256,)``: the 8 bools (bytes 0/1) of every byte value, as one int64 each."""
    key = str(device)
    if key not in _ROWS:
        table = (torch.arange(256).unsqueeze(1).bitwise_right_shift(torch.arange(8)).bitwise_and(1)).to(torch.uint8)
        _ROWS[key] = table.view(torch.int64).reshape(256).to(device)
    return _ROWS[key]


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 ``(ceil(n / 8),)`` -> bool ``(n,)`` (inverse of :func:`pack_bits`): one table lookup
    of 8 bools per byte."""
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(n / 8):
        raise ValueError(f"unpack_bits needs uint8 of {math.ceil(n / 8)} bytes for n={n}, got "
                         f"{packed.dtype} of {packed.numel()}")
    return _byte_rows(packed.device).index_select(0, packed.to(torch.int32)).view(torch.bool)[:n]


def packed_positions(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted int64 positions of the set bits of a packed set of ``n`` elements; scans the
    ``n / 8`` bytes and expands only the nonzero ones (cheaper than ``nonzero`` on ``n`` bools
    for sparse sets)."""
    nzb = packed.nonzero().squeeze(1)
    rows = _byte_rows(packed.device).index_select(0, packed.index_select(0, nzb).to(torch.int32))
    r = rows.view(torch.bool).nonzero().squeeze(1)  # (byte rank * 8 + bit) of each set bit
    pos = nzb.index_select(0, r.div(8, rounding_mode="floor")).mul_(8).add_(r.remainder(8))
    return pos[: int(torch.searchsorted(pos, n))] if pos.numel() and int(pos[-1]) >= n else pos


def bits_at(packed: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Bool values of the packed set at int positions ``idx`` (same shape as ``idx``)."""
    idx = idx.to(torch.int64)
    return packed[idx >> 3].bitwise_right_shift(idx & 7).bitwise_and_(1).bool()
