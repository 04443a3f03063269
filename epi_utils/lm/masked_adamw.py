"""AdamW (Loshchilov & Hutter, 2019, decoupled weight decay) with per-element update masks.

``MaskedAdamW.step(masks)`` takes ``{param_name: bool tensor}`` (same shape as the parameter;
True = the element may move). For elements with False, the parameter, ``exp_avg`` and
``exp_avg_sq`` keep their exact previous values (saved with ``index_select`` before the in-place
update and written back with ``index_copy_``, so they are bit-identical) and no weight decay is
applied; the flat positions of a mask's False elements are cached per mask tensor
(:class:`FrozenPositions`, shared with ``epi_utils.isolation.base.MaskedStepGuard``). Elements with
True get the ordinary AdamW update

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

with ``t`` the parameter's step count (bias correction per tensor, as in ``torch.optim.AdamW``).

Frozen positions are cached per mask tensor for one step (``frozen_cache="step"``, the default:
``zero_masked_grads`` and ``step`` of the same step share them; nothing is kept between steps, so
no int64 positions per task stay allocated) or across steps (``"persistent"``: up to ~8 mask sets,
for callers that return the same mask tensors at every step).

Masks that carry their own frozen positions (``frozen_positions()``: the ``StepMasks`` of a compact
isolation policy) are used as given, without a ``nonzero`` per mask; when they are laid out as this
optimizer's parameters (``flat_frozen()``), ``exp_avg`` and ``exp_avg_sq`` live as views of two flat
buffers and their frozen elements are saved and restored by one pass each instead of one per tensor
(the moments are laid out flat at the first such step, and again after ``load_state_dict``).

Fused importance (EPI, arXiv 2604.14010): ``defer_importance(tracker, task)`` makes the next
``zero_masked_grads`` (or, if it is not called, ``step``; or ``flush_importance`` before a mask
refresh) fold the gradients into ``task``'s importance EMA (``ImportanceTracker.update_params``,
multi-tensor kernels) at the start of its pass over the gradients, i.e. on the raw gradients
(before masking and clipping): the same values as ``tracker.update(task)`` after the backward
pass, without the tracker's own pass and its whole-model scratch buffers.

Fused kernels (issue 34; :mod:`epi_utils.lm.fused_kernels`): when the masks carry a packed bitmap
of their frozen elements laid out as this optimizer's parameters (``frozen_bits()`` and
``layout()``: the ``StepMasks`` of a compact isolation policy) and every parameter, gradient and
moment is an fp32 CPU tensor, ``zero_masked_grads`` is one C pass per tensor that folds a
deferred Taylor importance (fp32 flat tracker over the same parameters) and zeroes the frozen
gradients, and ``step`` runs torch's eager AdamW arithmetic in two C passes per tensor (moments,
then parameter; the denominator ``sqrt(v / bc2) + eps`` stays torch's, whose vector ``sqrt`` is not
IEEE's in the last bit on every CPU) that skip the frozen elements: bitwise the same values as the
eager path, without int64 positions or a save and restore. A step without masks takes the same
kernels with nothing frozen, so full SFT and EPI share one AdamW. ``fused=False`` (or
``EPI_FUSED_KERNELS=0``, or no C compiler) takes the eager path.
"""
from __future__ import annotations

import math

import torch

from epi_utils.lm import fused_kernels


class FrozenPositions:
    """Flat positions of the False (frozen) elements of bool masks, validated and cached per mask
    tensor: masking hooks return the same mask tensors until their next refresh. The cache holds a
    reference to each mask, so a cached ``id`` cannot be reused by another tensor; it is cleared
    when it holds ``max_entries`` masks (bounding the mask memory it keeps alive)."""

    def __init__(self, *, max_entries: int):
        self.max_entries = max_entries
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare(self, masks: dict[str, torch.Tensor]) -> None:
        """Compute the positions of every mask in ``masks`` that is a contiguous view of one shared
        1-D bool base (as a compact isolation policy returns them) with ONE pass over that base,
        instead of one ``nonzero`` per tensor; other masks are left to :meth:`__call__`."""
        groups: dict[int, list] = {}
        for name, m in masks.items():
            base = m._base
            if (id(m) not in self._cache and base is not None and base.dim() == 1 and base.dtype == torch.bool
                    and m.dtype == torch.bool and m.is_contiguous()):
                groups.setdefault(id(base), [base, []])[1].append(m)
        for base, views in groups.values():
            if len(views) < 2:
                continue
            if len(self._cache) + len(views) > self.max_entries:
                self.clear()
            frozen = (~base).nonzero().squeeze(1)
            starts = torch.tensor([m.storage_offset() - base.storage_offset() for m in views])
            bounds = torch.searchsorted(frozen, torch.stack([starts, starts + torch.tensor([m.numel() for m in views])]))
            for m, start, lo, hi in zip(views, starts.tolist(), bounds[0].tolist(), bounds[1].tolist()):
                self._cache[id(m)] = (m, frozen[lo:hi] - start)

    def __call__(self, name: str, p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """1-D int64 positions (on ``p``'s device) of ``mask``'s False elements in ``p.view(-1)``."""
        if mask.shape != p.shape or mask.dtype != torch.bool:
            raise ValueError(f"update mask for {name!r} must be a bool tensor of shape {tuple(p.shape)}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        if not p.is_contiguous():
            raise ValueError(f"parameter {name!r} is not contiguous; masked steps need contiguous parameters")
        hit = self._cache.get(id(mask))
        if hit is not None:
            return hit[1].to(p.device)
        if len(self._cache) >= self.max_entries:
            self.clear()
        idx = (~mask).reshape(-1).nonzero().squeeze(1).to(p.device)
        self._cache[id(mask)] = (mask, idx)
        return idx

    def clear(self) -> None:
        """Forget every cached mask (and release the references to them)."""
        self._cache.clear()


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW over named parameters; ``step(masks=None)`` (see the module docstring)."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 frozen_cache: str = "step", fused: bool | None = None):
        if frozen_cache not in ("step", "persistent"):
            raise ValueError(f"frozen_cache must be 'step' or 'persistent', got {frozen_cache!r}")
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.names = list(named_params)
        params = [named_params[n] for n in self.names]
        super().__init__([{"params": params, "names": self.names}],
                         dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.frozen_cache = frozen_cache
        n_sets = 8 if frozen_cache == "persistent" else 1  # ~8 mask sets kept alive, or this step's
        self._frozen_index = FrozenPositions(max_entries=n_sets * len(self.names) + 1)
        self._pending: tuple | None = None
        self._flat: tuple[torch.Tensor, torch.Tensor] | None = None  # exp_avg, exp_avg_sq of all parameters
        self._numels = [p.numel() for p in params]
        self._name_set, self._identity_index = set(self.names), {n: i for i, n in enumerate(self.names)}
        self.fused = fused  # None: the fused kernels where they apply and load; False: always eager
        self._checked_params: tuple | None = None  # data pointers of the parameters / gradients last found
        self._checked_grads: tuple | None = None   # fit for the kernels (see _kernels)

    def _kernels(self):
        """The loaded fused kernels when the parameters and gradients suit them (fp32, CPU,
        contiguous), else None (eager path). The parameters are checked once per set of storages
        (keyed on their data pointers: a parameter moved, re-typed or re-allocated is checked
        again; one re-strided in place over the same storage is not), the gradients once per set
        of gradient tensors (a step's two calls check them once)."""
        kern = None if self.fused is False else fused_kernels.lib()
        if kern is None:
            return None
        params = self.param_groups[0]["params"]
        key = tuple(p.data_ptr() for p in params)
        if key != self._checked_params:
            if not all(p.dtype == torch.float32 and p.is_cpu and p.is_contiguous() for p in params):
                return None
            self._checked_params = key
        grads = [p.grad for p in params]
        gkey = tuple(0 if g is None else g.data_ptr() for g in grads)
        if gkey != self._checked_grads:
            if any(g is not None and (g.dtype != torch.float32 or not g.is_cpu or g.is_sparse or not g.is_contiguous())
                   for g in grads):
                return None
            self._checked_grads = gkey
        return kern

    def _same_layout(self, masks) -> bool:
        """Whether ``masks`` (e.g. ``StepMasks``) say they lay out this optimizer's parameters, in
        order and size (checked per call: no state kept on the caller's mapping)."""
        layout = getattr(masks, "layout", None)
        if not callable(layout):
            return False
        names, sizes = layout()
        return list(names) == self.names and list(sizes) == self._numels

    def _fused_bits(self, masks):
        """``(kernels, packed frozen bitmap of masks)`` when this call can take the fused kernels
        (masks laid out as the parameters, see :meth:`_kernels`), else None."""
        fn = getattr(masks, "frozen_bits", None)
        bits = fn() if callable(fn) else None
        if bits is None or bits.dtype != torch.uint8 or not bits.is_cpu or not bits.is_contiguous() \
                or bits.numel() != math.ceil(sum(self._numels) / 8) or not self._same_layout(masks):
            return None
        kern = self._kernels()
        return None if kern is None else (kern, bits)

    def uses_fused(self, masks) -> bool:
        """Whether a step with ``masks`` takes the fused kernels (e.g. for a benchmark's pass split)."""
        return self._fused_bits(masks) is not None

    def _fusable(self, tracker, task) -> bool:
        """Whether ``tracker``'s update of ``task`` is the kernel's fold: Taylor, fp32 flat state
        over exactly these parameters."""
        return (tracker.estimator == "taylor" and tracker.state_dtype == torch.float32 and tracker.block_size is None
                and tracker.layout == "flat" and task in tracker._flat and tracker.names == self.names
                and all(a is b for a, b in zip(tracker.params, self.param_groups[0]["params"])))

    def _fold_zero(self, kern, bits: torch.Tensor | None) -> None:
        """One kernel pass: fold the deferred importance if it is the kernel's (else it is flushed
        eagerly first) and zero the frozen gradients of ``bits`` (None: fold only)."""
        params = self.param_groups[0]["params"]
        pending = self._pending
        if pending is not None and not self._fusable(pending[0], pending[1]):
            self.flush_importance()
            pending = None
        self._pending = None
        if pending is None and bits is None:
            return
        tracker, task = (pending[0], pending[1]) if pending is not None else (None, None)
        emas = tracker.ema[task] if tracker is not None else [None] * len(params)
        fused_kernels.fold_zero(kern, params, [p.grad for p in params], emas,
                                tracker.beta if tracker is not None else 0.0, bits, self._numels)
        if tracker is not None:
            tracker.end_update(task)

    def load_state_dict(self, state_dict) -> None:
        """``torch.optim.Optimizer.load_state_dict``; the loaded moments are laid out flat again at
        the next step."""
        super().load_state_dict(state_dict)
        self._flat = None

    def _flat_moments(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``exp_avg`` and ``exp_avg_sq`` of every parameter as views of two flat buffers (the
        parameters laid end to end, in order), created on first use (existing moments copied in,
        missing ones zero with step 0), so that frozen moments are saved and restored by one
        pass each; None when the parameters do not share one float dtype and device."""
        params = self.param_groups[0]["params"]
        if self._flat is not None:
            fm, fv = self._flat
            st = self.state.get(params[-1])
            last = fm.numel() - params[-1].numel()
            if st and st["exp_avg"].data_ptr() == fm[last:].data_ptr() \
                    and st["exp_avg_sq"].data_ptr() == fv[last:].data_ptr():  # still the flat views
                return self._flat
        p0 = params[0]
        if any(p.dtype != p0.dtype or p.device != p0.device or not p.is_contiguous() for p in params) \
                or not p0.is_floating_point():
            return None
        n = sum(p.numel() for p in params)
        fm, fv = (torch.zeros(n, dtype=p0.dtype, device=p0.device) for _ in range(2))
        off = 0
        for p in params:
            st = self.state[p]
            m, v = fm[off:off + p.numel()].view_as(p), fv[off:off + p.numel()].view_as(p)
            if st:
                m.copy_(st["exp_avg"])
                v.copy_(st["exp_avg_sq"])
            else:
                st["step"] = torch.zeros((), dtype=torch.float32)
            st["exp_avg"], st["exp_avg_sq"] = m, v
            off += p.numel()
        self._flat = (fm, fv)
        return self._flat

    def defer_importance(self, tracker, task: str) -> None:
        """Fold the gradients into ``tracker``'s EMA of ``task`` during the next
        ``zero_masked_grads`` (or ``step``), fused into its per-parameter pass (see the module
        docstring). ``tracker``: an ``ImportanceTracker`` over (a subset of) these parameters."""
        self.flush_importance()  # an earlier deferred update that no step consumed
        if tracker.names == self.names:  # the usual case (EPI over the optimised parameters): no lookups
            index = self._identity_index
        else:
            index = {n: i for i, n in enumerate(tracker.names)}
        unknown = [n for n in index if n not in self._name_set]
        if unknown:
            raise KeyError(f"tracker parameters not among the optimised parameters: {unknown[:5]}")
        tracker.begin_update(task)
        self._pending = (tracker, task, index)

    @torch.no_grad()
    def flush_importance(self) -> None:
        """Apply a deferred importance update now, on the current gradients (e.g. before a mask
        refresh that must see this step's importance); a no-op when none is pending."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        tracker, task, index = pending
        kern = self._kernels() if self._fusable(tracker, task) else None
        if kern is not None:  # the kernel's fold, no masks
            self._pending = pending
            return self._fold_zero(kern, None)
        pairs = [(index[name], torch.zeros_like(p) if p.grad is None else p.grad)
                 for name, p in zip(self.names, self.param_groups[0]["params"]) if name in index]
        tracker.update_params(task, [i for i, _ in pairs], [g for _, g in pairs])
        tracker.end_update(task)

    @torch.no_grad()
    def zero_masked_grads(self, masks: dict[str, torch.Tensor] | None) -> None:
        """Set the gradient of every masked (False) element to 0 (in place; positions cached per
        mask tensor), e.g. so that gradient clipping ignores protected elements; first folds each
        raw gradient into the deferred importance EMA, if any (one pass per parameter)."""
        masks = masks or {}
        unknown = set(masks) - set(self.names)
        if unknown:
            raise KeyError(f"update mask name not among the optimised parameters: {sorted(unknown)[0]!r}")
        fused = self._fused_bits(masks) if masks else None
        if fused is not None:  # one kernel pass: importance fold and zeroed frozen gradients
            return self._fold_zero(*fused)
        self.flush_importance()  # fold the raw gradients first (multi-tensor kernels)
        given = self._given_positions(masks)
        if given is None:
            self._frozen_index.prepare(masks)
        zeros = None
        for name, p in zip(self.names, self.param_groups[0]["params"]):
            if name in masks and p.grad is not None:
                idx = self._positions(masks, given, name, p)
                if idx.numel():  # scatter_ of a zero vector: the same zeros as index_fill_, faster on CPU
                    g = p.grad.view(-1)
                    if zeros is None or zeros.numel() < idx.numel() or zeros.dtype != g.dtype \
                            or zeros.device != g.device:
                        zeros = torch.zeros(max(idx.numel(), 4096), dtype=g.dtype, device=g.device)
                    g.scatter_(0, idx, zeros[:idx.numel()])

    def _given_positions(self, masks) -> dict[str, torch.Tensor] | None:
        """The frozen positions a mask mapping carries itself (``frozen_positions()``, e.g. the
        ``StepMasks`` of a compact isolation policy), or None. Positions of masks laid out as
        these parameters (``layout()``) fit by construction; others are checked against them."""
        fn = getattr(masks, "frozen_positions", None)
        if not callable(fn):
            return None
        given = fn()
        if not self._same_layout(masks):
            for name, p in zip(self.names, self.param_groups[0]["params"]):
                idx = given.get(name)
                if idx is not None and (not p.is_contiguous() or (idx.numel() and int(idx[-1]) >= p.numel())):
                    raise ValueError(f"frozen positions of {name!r} do not fit the parameter (contiguous, "
                                     f"{p.numel()} elements)")
        return given

    def _positions(self, masks, given, name: str, p: torch.Tensor) -> torch.Tensor:
        """Flat int64 positions of the frozen elements of parameter ``name`` (given by the masks,
        or computed from the bool mask and cached per mask tensor)."""
        if given is None:
            return self._frozen_index(name, p, masks[name])
        return given[name].to(p.device)

    @torch.no_grad()
    def step(self, masks: dict[str, torch.Tensor] | None = None, closure=None):  # type: ignore[override]
        masks = masks or {}
        unknown = set(masks) - set(self.names)
        if unknown:
            raise KeyError(f"update mask names not among the optimised parameters: {sorted(unknown)[:5]}")
        if self._pending is not None:  # importance deferred but zero_masked_grads not called
            self.zero_masked_grads(None)
        fused = self._fused_bits(masks) if masks else None
        if fused is not None and self._fused_step(*fused):
            return None
        if not masks:  # no element frozen: the same kernels, so that full SFT and EPI share one AdamW
            kern = self._kernels()
            if kern is not None and self._fused_step(kern, None):
                return None
        given = self._given_positions(masks)
        flat = self._flat_moments() if given is not None and self._same_layout(masks) else None
        if flat is not None:  # frozen moments saved (and restored below) in one pass per buffer
            _, pos = masks.flat_frozen()
            pos = pos.to(flat[0].device)
            saved_flat = [(t, t.index_select(0, pos)) for t in flat]
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for name, p in zip(group["names"], group["params"]):
                if p.grad is None:
                    continue
                frozen = None
                if name in masks:
                    frozen = self._positions(masks, given, name, p)
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
                    saved = [(t, t.view(-1).index_select(0, frozen)) for t in ((p.data,) if flat else (p.data, m, v))]
                _adamw_update(p, st, lr, b1, b2, eps, wd)
                if frozen is not None:
                    for tensor, values in saved:  # distinct positions: scatter_ = index_copy_, faster on CPU
                        tensor.view(-1).scatter_(0, frozen, values)
        if flat is not None:
            for tensor, values in saved_flat:
                tensor.scatter_(0, pos, values)
        if self.frozen_cache == "step":
            self._frozen_index.clear()
        return None

    def _fused_step(self, kern, bits: torch.Tensor | None) -> bool:
        """The step with the kernels (:func:`fused_kernels.adamw`: torch's eager AdamW arithmetic bit
        for bit, the elements set in ``bits`` skipped, so that their parameter and moments keep
        their values without a save and restore; ``bits`` None: no element frozen). A tensor whose
        elements are all frozen is skipped (moments and step count unchanged), as on the eager
        path. False (nothing done) when a moment is not an fp32 contiguous CPU tensor (the eager
        path then runs)."""
        group = self.param_groups[0]
        params, state = group["params"], self.state
        counts = fused_kernels.count_frozen(kern, bits, self._numels) if bits is not None else [0] * len(params)
        for p in params:
            st = state[p]
            if not st:  # every parameter gets its state, as the eager path's flat moments do
                st["step"] = torch.zeros((), dtype=torch.float32)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            if m.dtype != torch.float32 or v.dtype != torch.float32 or not (m.is_cpu and v.is_cpu) \
                    or not (m.is_contiguous() and v.is_contiguous()):
                return False
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        offset = 0
        for p, c, n in zip(params, counts, self._numels):
            if p.grad is not None and c < n:  # no gradient, or nothing may move: skipped (as the eager path)
                st = state[p]
                st["step"] += 1
                fused_kernels.adamw(kern, p, p.grad, st["exp_avg"], st["exp_avg_sq"], lr=lr, b1=b1, b2=b2, eps=eps,
                                    wd=wd, t=float(st["step"]), bits=bits if c else None, offset=offset)
            offset += n
        if self.frozen_cache == "step":
            self._frozen_index.clear()
        return True


def _adamw_update(p: torch.Tensor, st: dict, lr: float, b1: float, b2: float, eps: float, wd: float) -> None:
    """torch's eager AdamW arithmetic for one parameter (decoupled weight decay, bias correction
    by the parameter's own step count), in place on ``p`` and its moments."""
    st["step"] += 1
    t = float(st["step"])
    g = p.grad
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    denom = (v / bc2).sqrt_().add_(eps)
    p.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / bc1)
