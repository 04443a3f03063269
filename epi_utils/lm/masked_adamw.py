"""AdamW (Loshchilov & Hutter, 2019, decoupled weight decay) with per-element update masks.

``MaskedAdamW.step(masks)`` takes ``{param_name: bool tensor}`` (same shape as the parameter;
True = the element may move). For elements with False, the parameter, ``exp_avg`` and
``exp_avg_sq`` keep their exact previous values (selected with ``torch.where``, so they are
bit-identical) and no weight decay is applied. Elements with True get the ordinary AdamW update

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

with ``t`` the parameter's step count (bias correction per tensor, as in ``torch.optim.AdamW``).
"""
from __future__ import annotations

import torch


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
                if mask is not None:
                    if mask.shape != p.shape or mask.dtype != torch.bool:
                        raise ValueError(f"update mask for {name!r} must be a bool tensor of shape {tuple(p.shape)}, "
                                         f"got {mask.dtype} {tuple(mask.shape)}")
                    mask = mask.to(p.device)
                    if not bool(mask.any()):
                        continue  # nothing may move: skip entirely (moments and step count unchanged)
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                g = p.grad
                m_new = st["exp_avg"].mul(b1).add_(g, alpha=1 - b1)
                v_new = st["exp_avg_sq"].mul(b2).addcmul_(g, g, value=1 - b2)
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                denom = (v_new / bc2).sqrt_().add_(eps)
                p_new = p.mul(1 - lr * wd).addcdiv_(m_new, denom, value=-lr / bc1)
                if mask is None:
                    st["exp_avg"].copy_(m_new)
                    st["exp_avg_sq"].copy_(v_new)
                    p.copy_(p_new)
                else:
                    st["exp_avg"].copy_(torch.where(mask, m_new, st["exp_avg"]))
                    st["exp_avg_sq"].copy_(torch.where(mask, v_new, st["exp_avg_sq"]))
                    p.copy_(torch.where(mask, p_new, p))
        return None
