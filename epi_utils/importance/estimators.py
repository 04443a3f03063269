"""Parameter importance: estimators, an online per-task tracker, and top-share masks.

Estimators (element-wise, same shape as the parameter)
------------------------------------------------------
- ``taylor``:  ``|theta * grad|``, the first-order Taylor estimate of the loss change when the
  element is zeroed (Molchanov et al. 2017/2019; the "sensitivity" of AdaLoRA, Zhang et al. 2023).
- ``fisher``:  ``grad ** 2``, the diagonal empirical Fisher (Kirkpatrick et al. 2017, EWC).
- ``update``:  ``|theta_t - theta_0|``, update magnitude; CPI-FT's core-region criterion
  (arXiv 2508.21741: the top p% of ``|theta_ft - theta_0|`` after a probe fine-tune).
- ``sensitivity``: AdaLoRA's smoothed sensitivity (Zhang et al. 2023, "AdaLoRA", Eqs. 8-10):
  ``I_t = |theta * grad|``; ``Ibar_t = b1 Ibar_{t-1} + (1-b1) I_t``;
  ``U_t = b2 U_{t-1} + (1-b2) |I_t - Ibar_t|``; score ``s_t = Ibar_t * U_t``.
  (Same update order as ``peft.tuners.adalora.RankAllocator.update_ipt``; a test checks equality.)

ImportanceTracker
-----------------
Per-task EMA of an estimator over the steps of that task (task-homogeneous batches: a task's EMA
moves only on its own steps, ``Ibar_t = beta Ibar_{t-1} + (1-beta) I_t``, EPI's "EMA smoothing").
Updates use multi-tensor kernels (``torch._foreach_*``, one call per operation for a chunk of
parameters; no whole-model scratch buffers); ``MaskedAdamW.defer_importance`` folds them into the
optimizer's pass over the gradients (:meth:`ImportanceTracker.update_params`). A refresh reads one
task's scores at a time (:meth:`ImportanceTracker.lazy_flat_scores`). Layer-wise normalisation (EPI: "layer-wise normalisation") is applied when scores are
read (:meth:`ImportanceTracker.scores`): each parameter tensor's score is divided by its mean, so
that a global top share is not dominated by the layers with the largest gradient scale.

Memory per parameter, per tracked task (``ImportanceTracker.bytes_per_param``; EPI's whole state,
critical sets and owners included, is modelled by :func:`epi_utils.isolation.state.epi_state_bytes_per_param`):
- default (fp32 state): 4 bytes for taylor/fisher, 8 for sensitivity (EMA + uncertainty);
- lean ``state_dtype=torch.bfloat16``: 2 bytes (4 for sensitivity);
- lean ``block_size=B``: one fp32 score per block of B consecutive elements of a flattened tensor:
  ``4 / B`` bytes (``8 / B`` for sensitivity). Masks are then selected per block.

Mask selection (:func:`top_share_mask`)
---------------------------------------
The top ``ratio`` share of scores, ``scope="global"`` (one threshold over all tensors) or
``scope="layer"`` (the top share of each tensor). ``method="exact"`` finds the k-th largest value
with ``torch.kthvalue`` (selection, no full sort; above 200k scores only on the candidates above a
sampled lower bound, still exact) and breaks ties at the threshold by flat index
order, so the mask has exactly ``k = round(ratio * n)`` elements and equals the top-k of a stable
descending sort. ``method="sample"`` estimates the threshold as a quantile of ``sample_size``
uniformly drawn scores (``generator`` required); the selected share then deviates from ``ratio``
by about ``sqrt(ratio (1-ratio) / sample_size)`` (binomial standard error; 0.0007 for ratio 0.05
and 100k samples), and ties at the threshold are all included.

Drift metrics (:mod:`epi_utils.importance.drift`) live beside this module.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch

ESTIMATORS = ("taylor", "fisher", "update", "sensitivity")
NORMALIZATIONS = ("layer_mean", "layer_max", "none")
SCOPES = ("global", "layer")
METHODS = ("exact", "sample")


# ---------------------------------------------------------------------------------------------
# element-wise estimators
def taylor_importance(param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``|theta * grad|`` (shape of ``param``); first-order Taylor importance."""
    return (param.detach() * grad.detach()).abs()


def fisher_importance(grad: torch.Tensor) -> torch.Tensor:
    """``grad ** 2`` (shape of ``grad``); diagonal empirical Fisher."""
    g = grad.detach()
    return g * g


def update_importance(param: torch.Tensor, param0: torch.Tensor) -> torch.Tensor:
    """``|theta_t - theta_0|`` (shape of ``param``); CPI-FT core-region criterion."""
    return (param.detach() - param0.detach()).abs()


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


# ---------------------------------------------------------------------------------------------
class ImportanceTracker:
    """Online per-task EMA importance of named parameters.

    Parameters
    ----------
    named_params: mapping ``name -> Parameter`` (the trainable parameters; order is kept).
    estimator: one of ``ESTIMATORS`` except ``"update"`` (``"update"`` needs no EMA:
        use :func:`update_importance` or :meth:`snapshot_update`).
    beta: EMA factor of the importance (AdaLoRA's ``beta1``), in [0, 1).
    beta_unc: EMA factor of the uncertainty (AdaLoRA's ``beta2``), used by ``sensitivity``.
    state_dtype: ``torch.float32`` (default) or ``torch.bfloat16`` (lean).
    block_size: ``None`` (element-wise) or B >= 2: one score per block of B flattened elements.
    normalize: layer-wise normalisation when reading scores, one of ``NORMALIZATIONS``.
    layout: ``"flat"`` (default: each task's state is one contiguous buffer, read as one vector
        at a refresh; updated one tensor at a time with temporaries of that tensor's size, no
        whole-model scratch) or ``"foreach"`` (a list of per-parameter tensors updated with
        ``torch._foreach_*`` multi-tensor kernels, fused on CUDA, with whole-model temporaries;
        forced with ``block_size``, which updates one tensor at a time). Both give the same values
        up to float rounding.
    """

    def __init__(self, named_params: Mapping[str, torch.nn.Parameter], *, estimator: str = "taylor",
                 beta: float = 0.85, beta_unc: float = 0.85, state_dtype: torch.dtype = torch.float32,
                 block_size: int | None = None, normalize: str = "layer_mean", layout: str = "flat"):
        _check_choice("estimator", estimator, ("taylor", "fisher", "sensitivity"))
        _check_choice("normalize", normalize, NORMALIZATIONS)
        _check_choice("layout", layout, ("flat", "foreach"))
        _check_choice("state_dtype", state_dtype, (torch.float32, torch.bfloat16))
        if not 0.0 <= beta < 1.0 or not 0.0 <= beta_unc < 1.0:
            raise ValueError(f"beta and beta_unc must be in [0, 1), got {beta}, {beta_unc}")
        if block_size is not None and (not isinstance(block_size, int) or block_size < 2):
            raise ValueError(f"block_size must be None or an int >= 2, got {block_size!r}")
        if not named_params:
            raise ValueError("named_params is empty: nothing to track")
        self.names = list(named_params)
        self.params = [named_params[n] for n in self.names]
        self.estimator, self.beta, self.beta_unc = estimator, float(beta), float(beta_unc)
        self.state_dtype, self.block_size, self.normalize = state_dtype, block_size, normalize
        self.layout = "foreach" if block_size is not None else layout
        self._flat: dict[str, torch.Tensor] = {}
        self._flat_unc: dict[str, torch.Tensor] = {}
        self._offsets = [0]  # start of each parameter in the flat buffers
        for p in self.params:
            self._offsets.append(self._offsets[-1] + p.numel())
        self._denom_cache: dict[str, tuple] = {}  # task -> (n_updates, normalisers) of its last flat_scores
        self.ema: dict[str, list[torch.Tensor]] = {}
        self.unc: dict[str, list[torch.Tensor]] = {}
        self.n_updates: dict[str, int] = {}

    # -- state -------------------------------------------------------------------------------
    def _state_shape(self, p: torch.Tensor) -> tuple[int, ...]:
        return tuple(p.shape) if self.block_size is None else (math.ceil(p.numel() / self.block_size),)

    def _new_state(self) -> list[torch.Tensor]:
        return [torch.zeros(self._state_shape(p), dtype=self.state_dtype, device=p.device) for p in self.params]

    def _new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A zero buffer over all parameters and its per-parameter views."""
        buf = torch.zeros(sum(p.numel() for p in self.params), dtype=self.state_dtype, device=self.params[0].device)
        views, off = [], 0
        for p in self.params:
            views.append(buf[off:off + p.numel()].view(p.shape))
            off += p.numel()
        return buf, views

    @property
    def tasks(self) -> list[str]:
        return list(self.ema)

    def bytes_per_param(self) -> float:
        """Bytes of tracker state per tracked parameter element, per task."""
        n = sum(p.numel() for p in self.params)
        per_state = sum(math.prod(self._state_shape(p)) for p in self.params) * torch.empty(
            (), dtype=self.state_dtype).element_size()
        return (2 if self.estimator == "sensitivity" else 1) * per_state / n

    # -- updates -----------------------------------------------------------------------------
    def instantaneous(self, grads: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Current-step importance per parameter (fp32, blocked if ``block_size``)."""
        grads = self._grads(grads)
        params = [p.detach() for p in self.params]
        if self.estimator == "fisher":
            imp = torch._foreach_mul(grads, grads)
        else:
            imp = torch._foreach_mul(params, grads)
            torch._foreach_abs_(imp)
        if self.block_size is not None:
            imp = [self._block_mean(t) for t in imp]
        return imp

    def _grads(self, grads):
        if grads is not None:
            if len(grads) != len(self.params):
                raise ValueError(f"grads has {len(grads)} tensors, expected {len(self.params)}")
            return [g.detach() for g in grads]
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in self.params]

    def _block_mean(self, t: torch.Tensor) -> torch.Tensor:
        flat = t.reshape(-1)
        pad = (-flat.numel()) % self.block_size
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        sums = flat.view(-1, self.block_size).sum(1)
        counts = torch.full_like(sums, float(self.block_size))
        if pad:
            counts[-1] = self.block_size - pad
        return sums / counts

    def begin_update(self, task: str) -> None:
        """Create ``task``'s state if needed (before :meth:`update_param` calls)."""
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        self._denom_cache.pop(task, None)
        if task in self.ema:
            return
        if self.layout == "flat":
            self._flat[task], self.ema[task] = self._new_flat()
            if self.estimator == "sensitivity":
                self._flat_unc[task], self.unc[task] = self._new_flat()
        else:
            self.ema[task] = self._new_state()
            if self.estimator == "sensitivity":
                self.unc[task] = self._new_state()
        self.n_updates[task] = 0

    def end_update(self, task: str) -> None:
        """Count one update of ``task`` (after its :meth:`update_param` calls)."""
        self.n_updates[task] += 1

    @torch.no_grad()
    def update_param(self, task: str, i: int, grad: torch.Tensor) -> None:
        """Fold the gradient of parameter ``i`` (shape of ``params[i]``) into ``task``'s EMA, one
        tensor at a time (no whole-model scratch buffers; temporaries of this tensor's size only).
        Used by :meth:`update` and, fused into its pass over the gradients, by
        ``MaskedAdamW.zero_masked_grads`` (see ``MaskedAdamW.defer_importance``)."""
        g = grad.detach().float()
        if self.estimator == "fisher":
            imp = g * g
        else:
            imp = self.params[i].detach().float().mul(g).abs_()
        if self.block_size is not None:
            imp = self._block_mean(imp)
        self._fold(imp, self.ema[task][i], self.unc[task][i] if self.estimator == "sensitivity" else None)

    def _fold(self, imp: torch.Tensor, e: torch.Tensor, u: torch.Tensor | None) -> None:
        """Fold instantaneous importance ``imp`` (fp32, consumed) into the EMA view ``e`` and, for the
        sensitivity estimator, the uncertainty view ``u`` (AdaLoRA: ``u <- b u + (1 - b) |imp - e|``),
        in fp32 whatever the state's dtype. The one EMA step of :meth:`update_param` and the flat path."""
        e32 = e if e.dtype == torch.float32 else e.float()
        e32.mul_(self.beta).add_(imp, alpha=1.0 - self.beta)
        if u is not None:
            u32 = u if u.dtype == torch.float32 else u.float()
            u32.mul_(self.beta_unc).add_(imp.sub_(e32).abs_(), alpha=1.0 - self.beta_unc)
            if u32 is not u:
                u.copy_(u32)
        if e32 is not e:
            e.copy_(e32)

    @torch.no_grad()
    def update_params(self, task: str, indices: Sequence[int], grads: Sequence[torch.Tensor], *,
                      chunk_elements: int = 1 << 21) -> None:
        """:meth:`update_param` for several parameters with ``torch._foreach_*`` kernels (one call per
        operation for a chunk of tensors of at most ``chunk_elements`` elements, which bounds the
        temporaries: 2M elements, 8 MB in fp32, which the C allocator serves again from its heap;
        with 1 << 24 every update page-faulted fresh 64 MB mappings, 1.8x slower on SmolLM2-sized
        tensors by CPU time); the same values as :meth:`update_param` (the same element-wise operations in
        the same order; ``_foreach_*`` on the CPU runs each tensor's ordinary kernel, without a
        Python round trip per operation and tensor). Block-wise state goes one tensor at a time."""
        if self.block_size is not None:
            for i, g in zip(indices, grads):
                self.update_param(task, i, g)
            return
        chunk: list[tuple[int, torch.Tensor]] = []
        size = 0
        for i, g in zip(indices, grads):
            chunk.append((i, g))
            size += g.numel()
            if size >= chunk_elements:
                self._update_chunk(task, chunk)
                chunk, size = [], 0
        if chunk:
            self._update_chunk(task, chunk)

    def _update_chunk(self, task: str, chunk: Sequence[tuple[int, torch.Tensor]]) -> None:
        first, last = chunk[0][0], chunk[-1][0]
        if task in self._flat and last - first + 1 == len(chunk) and all(
                i == first + k for k, (i, _) in enumerate(chunk)):
            return self._update_flat_span(task, chunk)
        gs = [g.detach().float() for _, g in chunk]
        if self.estimator == "fisher":
            imp = torch._foreach_mul(gs, gs)
        else:
            imp = torch._foreach_mul([self.params[i].detach().float() for i, _ in chunk], gs)
            torch._foreach_abs_(imp)
        ema = [self.ema[task][i] for i, _ in chunk]
        ema32 = ema if self.state_dtype == torch.float32 else [e.float() for e in ema]
        torch._foreach_mul_(ema32, self.beta)
        torch._foreach_add_(ema32, imp, alpha=1.0 - self.beta)
        if self.estimator == "sensitivity":  # U <- b2 U + (1 - b2) |I - Ibar| (Ibar just updated, fp32)
            unc = [self.unc[task][i] for i, _ in chunk]
            unc32 = unc if self.state_dtype == torch.float32 else [u.float() for u in unc]
            torch._foreach_sub_(imp, ema32)
            torch._foreach_abs_(imp)
            torch._foreach_mul_(unc32, self.beta_unc)
            torch._foreach_add_(unc32, imp, alpha=1.0 - self.beta_unc)
            if unc32 is not unc:
                torch._foreach_copy_(unc, unc32)
        if ema32 is not ema:
            torch._foreach_copy_(ema, ema32)

    def _update_flat_span(self, task: str, chunk: Sequence[tuple[int, torch.Tensor]]) -> None:
        """:meth:`_update_chunk` for consecutive parameters of the flat layout: the instantaneous
        importance is written per tensor into one chunk-sized fp32 buffer (the size of the
        temporaries of the multi-tensor path), then every EMA operation is ONE kernel over the
        span of the flat state (instead of one per tensor: what dominates for many small tensors,
        e.g. LoRA adapters). Same element-wise operations in the same order: same values."""
        lo, hi = self._offsets[chunk[0][0]], self._offsets[chunk[-1][0] + 1]
        gs = [g if g.dtype == torch.float32 else g.float() for _, g in chunk]  # no autograd here (no_grad)
        xs = gs if self.estimator == "fisher" else [
            p if p.dtype == torch.float32 else p.float() for p in (self.params[i] for i, _ in chunk)]
        if hi - lo < 4096 * len(chunk):  # small tensors: one multi-tensor product, then one copy into place
            imp = torch.cat([t.reshape(-1) for t in torch._foreach_mul(xs, gs)])
        else:  # large tensors: each product written in place (no extra pass)
            imp = torch.empty(hi - lo, dtype=torch.float32, device=self.params[0].device)
            for (i, _), x, g in zip(chunk, xs, gs):
                torch.mul(x, g, out=imp[self._offsets[i] - lo:self._offsets[i + 1] - lo].view(g.shape))
        if self.estimator != "fisher":
            imp.abs_()
        self._fold(imp, self._flat[task][lo:hi],
                   self._flat_unc[task][lo:hi] if self.estimator == "sensitivity" else None)

    @torch.no_grad()
    def update(self, task: str, grads: Sequence[torch.Tensor] | None = None) -> None:
        """Fold the current gradients (``p.grad`` unless ``grads`` is given) into ``task``'s EMA."""
        grads = self._grads(grads)
        self.begin_update(task)
        if self.layout == "flat" or self.block_size is not None:
            self.update_params(task, range(len(grads)), grads)
            return self.end_update(task)
        imp = self.instantaneous(grads)  # foreach: multi-tensor kernels (fused on CUDA)
        ema = self.ema[task]
        ema32 = [e.float() for e in ema] if self.state_dtype != torch.float32 else ema
        torch._foreach_mul_(ema32, self.beta)
        torch._foreach_add_(ema32, imp, alpha=1.0 - self.beta)
        if self.estimator == "sensitivity":
            unc = self.unc[task]
            unc32 = [u.float() for u in unc] if self.state_dtype != torch.float32 else unc
            diff = torch._foreach_sub(imp, ema32)
            torch._foreach_abs_(diff)
            torch._foreach_mul_(unc32, self.beta_unc)
            torch._foreach_add_(unc32, diff, alpha=1.0 - self.beta_unc)
            if unc32 is not unc:
                torch._foreach_copy_(unc, unc32)
        if ema32 is not ema:
            torch._foreach_copy_(ema, ema32)
        self.end_update(task)

    # -- reading -----------------------------------------------------------------------------
    @torch.no_grad()
    def raw_scores(self, task: str) -> dict[str, torch.Tensor]:
        """Un-normalised fp32 scores of ``task`` (``Ibar`` or ``Ibar * U`` for sensitivity)."""
        if task not in self.ema:
            raise KeyError(f"task {task!r} has no importance yet; tracked tasks: {self.tasks}")
        ema = [e.float() for e in self.ema[task]]
        if self.estimator == "sensitivity":
            ema = torch._foreach_mul(ema, [u.float() for u in self.unc[task]])
        return dict(zip(self.names, ema))

    def scores(self, task: str, *, expand: bool = True) -> dict[str, torch.Tensor]:
        """Layer-normalised scores of ``task``; with ``expand`` blocked scores are broadcast back
        to parameter shape (each element gets its block's score)."""
        out = normalize_scores(self.raw_scores(task), how=self.normalize)
        if expand and self.block_size is not None:
            out = {n: expand_blocks(s, p.shape, self.block_size) for (n, s), p in zip(out.items(), self.params)}
        return out

    def _flat_raw(self, task: str) -> torch.Tensor:
        flat = self._flat[task].float()
        if self.estimator == "sensitivity":
            flat = flat * self._flat_unc[task].float()
        return flat

    @torch.no_grad()
    def flat_scores(self, task: str) -> torch.Tensor:
        """Layer-normalised scores of ``task`` as one fp32 vector over all parameters, shape
        ``(n_params,)``, in ``names`` order (blocked scores expanded); equal to
        ``torch.cat`` of :meth:`scores`, computed on the flat buffer without per-tensor copies."""
        if self.layout != "flat" or task not in self._flat:
            return torch.cat([s.reshape(-1) for s in self.scores(task).values()])
        flat = self._flat_raw(task)
        if self.normalize == "none":
            return flat.clone() if flat is self._flat[task] else flat
        sizes = [p.numel() for p in self.params]
        views = torch.split(flat, sizes)
        denom = self._denominators(views)
        self._denom_cache[task] = (self.n_updates.get(task), denom)
        out = torch.empty_like(flat)
        for v, d, o in zip(views, denom, torch.split(out, sizes)):
            if d > 0:
                torch.div(v, d, out=o)
            else:  # all-zero (or non-positive) tensors score 0, as normalize_scores
                o.zero_()
        return out

    def _denominators(self, views) -> list[float]:
        """Per-tensor normalisers (mean or max of each view), as Python floats."""
        return torch.stack([v.mean() if self.normalize == "layer_mean" else v.max() for v in views]).tolist()

    def lazy_flat_scores(self, task: str) -> LazyFlatScores:
        """:meth:`flat_scores` of ``task`` computed when needed: ``materialize()`` gives the whole
        vector (one task at a time, so a refresh holds one fp32 score vector, not one per task),
        ``scores[idx]`` only the entries at int positions ``idx`` (equal to ``flat_scores(task)[idx]``)."""

        if task not in self.ema:
            raise KeyError(f"task {task!r} has no importance yet; tracked tasks: {self.tasks}")
        return LazyFlatScores(self, task)

    def reset(self, task: str | None = None) -> None:
        """Forget ``task`` (or every task)."""
        for store in (self.ema, self.unc, self.n_updates, self._flat, self._flat_unc, self._denom_cache):
            if task is None:
                store.clear()
            else:
                store.pop(task, None)


def expand_blocks(block_scores: torch.Tensor, shape: Sequence[int], block_size: int) -> torch.Tensor:
    """Broadcast per-block scores (``(ceil(n/B),)``) back to a tensor of ``shape``."""
    n = math.prod(shape)
    return block_scores.repeat_interleave(block_size)[:n].reshape(tuple(shape))


def normalize_scores(scores: Mapping[str, torch.Tensor], *, how: str = "layer_mean") -> dict[str, torch.Tensor]:
    """Layer-wise normalisation: divide each tensor by its mean (``layer_mean``) or max
    (``layer_max``); ``none`` returns the scores unchanged. All-zero tensors stay zero."""
    _check_choice("how", how, NORMALIZATIONS)
    if how == "none":
        return dict(scores)
    out = {}
    for name, s in scores.items():
        s = s.float()
        denom = s.mean() if how == "layer_mean" else s.max()
        out[name] = s / denom if float(denom) > 0 else torch.zeros_like(s)
    return out


# ---------------------------------------------------------------------------------------------
def _exact_topk_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k largest entries of a 1-D tensor, ties broken by lower index first.

    Above 200k entries a two-stage selection is used: a lower bound of the threshold from a
    sample (fixed internal generator), then ``torch.kthvalue`` on the candidates above it only;
    the result is still exact (full ``kthvalue`` when the bound turns out too high).
    """
    n = flat.numel()
    if k <= 0 or k >= n:
        return torch.full((n,), k > 0, dtype=torch.bool, device=flat.device)
    thr = None
    if n > 200_000:
        g = torch.Generator(device="cpu").manual_seed(0)
        m = min(200_000, max(20_000, n // 50))  # sample size: 20k (tiny models) .. 200k (>= 10M scores)
        sample = flat[torch.randint(0, n, (m,), generator=g).to(flat.device)]
        # a sample quantile below the true threshold w.h.p.: 5 binomial standard errors + 10% below
        p = k / n
        q = max(0.0, 1.0 - 1.1 * p - 5.0 * math.sqrt(p * (1.0 - p) / m))
        lo = torch.kthvalue(sample, max(1, int(q * m))).values
        cand = flat[flat >= lo]
        if cand.numel() >= k:
            thr = torch.kthvalue(cand, cand.numel() - k + 1).values
    if thr is None:
        thr = torch.kthvalue(flat, n - k + 1).values  # k-th largest
    mask = flat >= thr
    excess = int(torch.count_nonzero(mask)) - k
    if excess > 0:  # ties at the threshold: keep the lowest indices, drop the last `excess` ties
        ties = (flat == thr).nonzero().squeeze(1)
        mask[ties[ties.numel() - excess:]] = False
    return mask


def top_share_flat(flat: torch.Tensor, *, ratio: float, scope: str = "global",
                   sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Exact top-``ratio`` mask of a flat score vector: bool, shape ``(n,)``.

    ``scope="global"``: one threshold over all ``n`` entries (``k = round(ratio * n)``);
    ``scope="layer"``: the top share of each consecutive segment of length ``sizes[i]``. Equal to
    ``torch.cat`` of :func:`top_share_mask` (method ``exact``) over the same tensors."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    _check_choice("scope", scope, SCOPES)
    if hasattr(flat, "materialize"):  # LazyFlatScores: one task's scores, built now
        flat = flat.materialize()
    flat = flat.detach().float().reshape(-1)
    if scope == "global":
        return _exact_topk_mask(flat, int(round(ratio * flat.numel())))
    if sizes is None or sum(sizes) != flat.numel():
        raise ValueError(f"scope='layer' needs sizes summing to {flat.numel()}, got {sizes!r}")
    return torch.cat([_exact_topk_mask(part, int(round(ratio * part.numel()))) for part in torch.split(flat, sizes)])


def top_share_mask(scores: Mapping[str, torch.Tensor], *, ratio: float, scope: str = "global",
                   method: str = "exact", sample_size: int = 100_000,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Bool masks (same shapes as ``scores``) marking the top ``ratio`` share of the scores.

    ``scope``: ``"global"`` (one threshold over all tensors) or ``"layer"`` (per tensor).
    ``method``: ``"exact"`` (k-th value, ties by flat index: equals a stable descending sort's
    top ``round(ratio * n)``) or ``"sample"`` (threshold = quantile of ``sample_size`` scores drawn
    uniformly with ``generator``; share off by ~``sqrt(ratio(1-ratio)/sample_size)``).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    _check_choice("scope", scope, SCOPES)
    _check_choice("method", method, METHODS)
    if not scores:
        raise ValueError("scores is empty")
    if method == "sample" and generator is None:
        raise ValueError("method='sample' needs an explicit torch.Generator (generator=...)")
    names = list(scores)
    if scope == "layer":
        groups = [[n] for n in names]
    else:
        groups = [names]
    out: dict[str, torch.Tensor] = {}
    for group in groups:
        tensors = [scores[n].detach().float().reshape(-1) for n in group]
        sizes = [t.numel() for t in tensors]
        total = sum(sizes)
        k = int(round(ratio * total))
        if method == "exact":
            flat = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            mask = _exact_topk_mask(flat, k)
            for n, part in zip(group, torch.split(mask, sizes)):
                out[n] = part.reshape(scores[n].shape)
        else:
            thr = _sampled_threshold(tensors, sizes, ratio=ratio, sample_size=sample_size, generator=generator)
            for n, t in zip(group, tensors):
                out[n] = (t >= thr).reshape(scores[n].shape) if k > 0 else torch.zeros(
                    scores[n].shape, dtype=torch.bool, device=t.device)
    return out


def _sampled_threshold(tensors, sizes, *, ratio, sample_size, generator) -> torch.Tensor:
    total = sum(sizes)
    m = min(sample_size, total)
    idx = torch.randint(0, total, (m,), generator=generator, device=generator.device)
    offsets = torch.tensor([0] + list(sizes), device=idx.device).cumsum(0)
    which = torch.searchsorted(offsets[1:], idx, right=True)
    sample = torch.empty(m, device=tensors[0].device)
    for i, t in enumerate(tensors):
        sel = which == i
        if sel.any():
            sample[sel.to(sample.device)] = t[(idx[sel] - offsets[i]).to(t.device)]
    return torch.quantile(sample, 1.0 - ratio) if ratio > 0 else sample.max() + 1


def mask_share(masks: Mapping[str, torch.Tensor]) -> float:
    """Share of True elements over all masks."""
    n = sum(m.numel() for m in masks.values())
    return float(sum(int(torch.count_nonzero(m)) for m in masks.values())) / max(n, 1)


def iter_named_trainable(model: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Parameter]]:
    """``(name, param)`` for the parameters that require gradients."""
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


class LazyFlatScores:
    """Deferred ``ImportanceTracker.flat_scores`` of one task (``tracker.lazy_flat_scores(task)``):
    ``materialize()`` builds the vector, ``scores[idx]`` only its entries at int positions ``idx``."""

    def __init__(self, tracker, task: str):
        self.tracker, self.task = tracker, task
        self._n = sum(p.numel() for p in tracker.params)

    def numel(self) -> int:
        return self._n

    def materialize(self) -> torch.Tensor:
        return self.tracker.flat_scores(self.task)

    @torch.no_grad()
    def source(self, means=None) -> tuple[torch.Tensor, list[int], torch.Tensor | None] | None:
        """``(buffer, sizes, divisors)`` such that the scores are ``buffer / divisors[t]`` over the
        tensors of ``sizes`` laid end to end (0 where a divisor is not > 0; ``divisors`` None: the
        buffer itself), without building them: the fp32 flat EMA and the normalisers
        :meth:`materialize` would divide by (the same values; cached for ``scores[idx]``); None
        where the state is not one fp32 vector (bf16 or block-wise state, ``sensitivity``).
        ``means``: ``(buffer, sizes) -> fp32 tensor | None``, the per-tensor means computed as torch
        computes them (the fused kernels' ``layer_means``) for ``layer_mean``; None: torch's."""
        tr = self.tracker
        buf = tr._flat.get(self.task) if tr.layout == "flat" else None
        if buf is None or buf.dtype != torch.float32 or tr.estimator == "sensitivity" or tr.block_size is not None:
            return None
        sizes = [p.numel() for p in tr.params]
        if tr.normalize == "none":
            return buf, sizes, None
        d = means(buf, sizes) if means is not None and tr.normalize == "layer_mean" else None
        if d is None:
            d = torch.tensor(tr._denominators(torch.split(buf, sizes)), dtype=torch.float32)
        tr._denom_cache[self.task] = (tr.n_updates.get(self.task), d.tolist())
        return buf, sizes, d

    @torch.no_grad()
    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        tr = self.tracker
        idx = torch.as_tensor(idx).reshape(-1).to(torch.int64)
        if tr.layout != "flat" or tr.normalize == "none" or self.task not in tr._flat:
            return self.materialize()[idx]
        buf = tr._flat[self.task]
        sizes = [p.numel() for p in tr.params]
        last = tr._denom_cache.get(self.task)  # from materialize() of the same state, if any
        if last is not None and last[0] == tr.n_updates.get(self.task):
            denom = torch.tensor(last[1], dtype=torch.float32, device=buf.device)
        else:
            denom = torch.tensor(tr._denominators(torch.split(tr._flat_raw(self.task), sizes)),
                                 dtype=torch.float32, device=buf.device)
        ends = torch.tensor(sizes, device=idx.device).cumsum(0)
        d = denom[torch.searchsorted(ends, idx, right=True)]
        val = buf[idx].float()  # the entries of _flat_raw at idx, without converting the whole buffer
        if tr.estimator == "sensitivity":
            val = val * tr._flat_unc[self.task][idx].float()
        return torch.where(d > 0, val / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(val))
