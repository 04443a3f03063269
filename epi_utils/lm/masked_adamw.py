"""AdamW (Loshchilov & Hutter, 2019, decoupled weight decay) with per-element update masks.

``MaskedAdamW.step(masks)`` takes ``{param_name: bool tensor}`` (same shape as the parameter;
True = the element may move). For elements with False, the parameter, ``exp_avg`` and
``exp_avg_sq`` keep their exact previous values (saved with ``index_select`` before the in-place
update and written back with ``index_copy_``, so they are bit-identical) and no weight decay is
applied; the flat positions of a mask's False elements are cached per mask tensor
(:class:`FrozenPositions`, shared with ``epi_utils.epi.isolation.MaskedStepGuard``). Elements with
True get the ordinary AdamW update

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

with ``t`` the parameter's step count (bias correction per tensor, as in ``torch.optim.AdamW``).
"""
from __future__ import annotations

import torch


class FrozenPositions:
    """Flat positions of the False (frozen) elements of bool masks, validated and cached per mask
    tensor: masking hooks return the same mask tensors until their next refresh. The cache holds a
    reference to each mask, so a cached ``id`` cannot be reused by another tensor; it is cleared
    when it holds ``max_entries`` masks (bounding the mask memory it keeps alive)."""

    def __init__(self, *, max_entries: int):
        self.max_entries = max_entries
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, name: str, p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """1-D int64 positions (on ``p``'s device) of ``mask``'s False elements in ``p.view(-1)``."""
        hit = self._cache.get(id(mask))
        if hit is not None:
            return hit[1]
        if mask.shape != p.shape or mask.dtype != torch.bool:
            raise ValueError(f"update mask for {name!r} must be a bool tensor of shape {tuple(p.shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if not p.is_contiguous():
            raise ValueError(f"parameter {name!r} is not contiguous; masked steps need contiguous parameters")
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        idx = (~mask).reshape(-1).nonzero().squeeze(1).to(p.device)
        self._cache[id(mask)] = (mask, idx)
        return idx


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW over named parameters; ``step(masks=None)`` (see the module docstring)."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.names = list(named_params)
        params = [named_params[n] for n in self.names]
        super().__init__([{"params": params, "names": self.names}],
                         dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._frozen_index = FrozenPositions(max_entries=8 * len(self.names))  # ~8 mask sets kept alive

    @torch.no_grad()
    def zero_masked_grads(self, masks: dict[str, torch.Tensor] | None) -> None:
        """Set the gradient of every masked (False) element to 0 (in place; positions cached per
        mask tensor), e.g. so that gradient clipping ignores protected elements."""
        params = dict(zip(self.names, self.param_groups[0]["params"]))
        for name, mask in (masks or {}).items():
            if name not in params:
                raise KeyError(f"update mask name not among the optimised parameters: {name!r}")
            p = params[name]
            if p.grad is not None:
                idx = self._frozen_index(name, p, mask)
                if idx.numel():
                    p.grad.view(-1).index_fill_(0, idx, 0)

    @torch.no_grad()
    def step(self, masks: dict[str, torch.Tensor] | None = None, closure=None):  # type: ignore[override]
        masks = masks or {}
        unknown = set(masks) - set(self.names)
        if unknown:
            raise KeyError(f"update mask names not among the optimised parameters: {sorted(unknown)[:5]}")
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for name, p in zip(group["names"], group["params"]):
                if p.grad is None:
                    continue
                mask = masks.get(name)
                frozen = None
                if mask is not None:
                    frozen = self._frozen_index(name, p, mask)
                    if frozen.numel() == p.numel():
                        continue  # nothing may move: skip entirely (moments and step count unchanged)
                    if frozen.numel() == 0:
                        frozen = None
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = st["exp_avg"], st["exp_avg_sq"]
                if frozen is not None:  # save the masked elements; written back after the update
                    saved = [(t, t.view(-1).index_select(0, frozen)) for t in (p.data, m, v)]
                st["step"] += 1
                t = float(st["step"])
                g = p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                denom = (v / bc2).sqrt_().add_(eps)
                p.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / bc1)
                if frozen is not None:
                    for tensor, values in saved:
                        tensor.view(-1).index_copy_(0, frozen, values)
        return None
