"""Importance at a fixed checkpoint, from disjoint equal-size parts of each task's data (study 01).

The online EMA tracker (:mod:`epi_utils.importance.estimators`) folds one batch per step into a
zero-initialised EMA while the weights move; its masks mix estimator noise with training dynamics.
This module measures importance the way a reliability study needs it: the weights are **fixed**
(one checkpoint), each task's training samples are split into ``n_parts`` **disjoint parts of equal
size** (:func:`split_parts`), and the importance of a part is the sum over its micro-batches of
``probe_batch`` samples of an element-wise estimator (:func:`checkpoint_importance`):

- ``taylor``: ``sum_b |theta * g_b|``, first-order Taylor importance (Molchanov et al. 2019,
  "Importance Estimation for Neural Network Pruning"); ``g_b`` is the gradient of the token-mean
  response loss of micro-batch ``b`` (the loss of :func:`epi_utils.lm.train.train_sft`).
- ``fisher``: ``sum_b g_b ** 2``, the diagonal empirical Fisher over micro-batches (Kirkpatrick et al.
  2017, EWC).
- ``magnitude``: ``|theta|``, gradient-free: it does not depend on the data, so its two parts agree
  exactly, and it can only change between checkpoints when the weights move (a control).

The pseudo-task ``"all"`` of a part is the sum over tasks of that part's raw sums (every task's
part has the same number of samples, so ``"all"`` has ``n_tasks`` times the budget of one task, the
same in every part). Scores are layer-normalised when read (each tensor divided by its mean, EPI's
"layer-wise normalisation", :func:`epi_utils.importance.estimators.normalize_scores`).

Rankings are stored compactly (:func:`top_ranking`): the flat indices of the top ``max share`` of a
score vector sorted by descending score (ties by lower index), ``int32`` below 2**31 elements, so a
top-p set for any ``p <= max share`` is a prefix. Memory per ranking: ``4 * max_share * n`` bytes
(SmolLM2-360M at 20%: 0.29 GB) instead of a 1-byte mask per element per share.

:func:`permute_hidden_units` plants drift of known size: a function-preserving permutation of the
residual stream and of the MLP hidden units (the model computes exactly the same function, every
importance value moves to a new index), for GPT-2 and Llama/Qwen2 parameter layouts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from epi_utils.importance.drift import module_of
from epi_utils.importance.estimators import iter_named_trainable, top_share_flat
from epi_utils.lm.sft_format import encode_example, pad_batch, pad_id

ESTIMATORS = ("taylor", "fisher", "magnitude")
ALL = "all"


def split_parts(samples: Sequence, *, n_parts: int, rng: np.random.Generator) -> list[list]:
    """Split each task's samples into ``n_parts`` disjoint parts of equal size (remainder dropped).

    ``samples``: objects with a ``.task`` attribute. Returns ``n_parts`` lists; part ``i`` holds
    ``floor(n_task / n_parts)`` samples of every task, drawn by ``rng``'s permutation. Raises
    ``ValueError`` when a task has fewer than ``n_parts`` samples.
    """
    if not isinstance(n_parts, int) or n_parts < 2:
        raise ValueError(f"n_parts must be an int >= 2, got {n_parts!r}")
    by_task: dict[str, list] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    parts: list[list] = [[] for _ in range(n_parts)]
    for task in sorted(by_task):
        items = by_task[task]
        size = len(items) // n_parts
        if size < 1:
            raise ValueError(f"task {task!r} has {len(items)} samples, fewer than n_parts={n_parts}")
        order = rng.permutation(len(items))
        for i in range(n_parts):
            parts[i].extend(items[j] for j in order[i * size:(i + 1) * size])
    return parts


@dataclass
class Importance:
    """Raw (un-normalised) importance sums of one checkpoint and one data part.

    ``names``/``sizes``: the trainable parameters in order (flat vectors concatenate them);
    ``scores[(task, estimator)]``: fp32 vector of shape ``(n_params,)`` on the CPU;
    ``n_samples[task]``: samples behind the task's sums.
    """

    names: list[str]
    sizes: list[int]
    scores: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    n_samples: dict[str, int] = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return int(sum(self.sizes))

    def normalized(self, task: str, estimator: str, *, normalize: str = "layer_mean") -> torch.Tensor:
        """Layer-normalised flat scores, shape ``(n_params,)`` (see the module docstring)."""
        key = (task, estimator)
        if key not in self.scores:
            raise KeyError(f"no importance for task {task!r} and estimator {estimator!r}; have {sorted(self.scores)}")
        return normalize_flat(self.scores[key], self.sizes, how=normalize)


def normalize_flat(flat: torch.Tensor, sizes: Sequence[int], *, how: str = "layer_mean") -> torch.Tensor:
    """Divide each tensor's segment (lengths ``sizes``) of ``flat`` by its mean (``layer_mean``) or
    max (``layer_max``); all-zero segments stay 0; ``none`` returns a copy."""
    if how not in ("layer_mean", "layer_max", "none"):
        raise ValueError(f"normalize must be one of ('layer_mean', 'layer_max', 'none'), got {how!r}")
    out = flat.detach().float().clone()
    if how == "none":
        return out
    for seg in torch.split(out, list(sizes)):
        d = float(seg.mean() if how == "layer_mean" else seg.max())
        if d > 0:
            seg.div_(d)
        else:
            seg.zero_()
    return out


def _loss(model, batch) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    tgt = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)


def _batches(tokenizer, samples: Sequence, batch_size: int, device) -> list[dict]:

    out = []
    for k in range(0, len(samples), batch_size):
        rows = [encode_example(tokenizer, s.prompt, s.response) for s in samples[k:k + batch_size]]
        out.append({n: v.to(device) for n, v in pad_batch(rows, pad_token_id=pad_id(tokenizer)).items()})
    return out


def _check(estimators, probe_batch, samples) -> None:
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad or not estimators:
        raise ValueError(f"estimators must be a non-empty subset of {ESTIMATORS}, got {list(estimators)}")
    if not isinstance(probe_batch, int) or probe_batch < 1:
        raise ValueError(f"probe_batch must be a positive int, got {probe_batch!r}")
    if not samples:
        raise ValueError("checkpoint importance needs at least one sample")


def _task_sums(model, tokenizer, samples: Sequence, *, estimators: Sequence[str], probe_batch: int,
               with_all: bool):
    """Yield ``(task, {estimator: (n_params,) sum on the model's device}, n_samples)`` per task
    (sorted), then ``"all"``; the model is left in its mode, gradients cleared."""
    named = dict(iter_named_trainable(model))
    params = list(named.values())
    device = params[0].device
    was_training = model.training
    model.eval()  # dropout off: importance of the deterministic network
    by_task: dict[str, list] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    grad_est = [e for e in estimators if e != "magnitude"]
    theta = torch.cat([p.detach().reshape(-1).float() for p in params])
    all_sums = {e: torch.zeros_like(theta) for e in grad_est} if with_all else {}
    try:
        for task in sorted(by_task):
            sums = {e: torch.zeros_like(theta) for e in grad_est}
            for batch in (_batches(tokenizer, by_task[task], probe_batch, device) if grad_est else []):
                model.zero_grad(set_to_none=True)
                _loss(model, batch).backward()
                g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                               for p in params])
                if "taylor" in sums:
                    sums["taylor"].add_((theta * g).abs_())
                if "fisher" in sums:
                    sums["fisher"].add_(g.mul_(g))
            model.zero_grad(set_to_none=True)
            for e in all_sums:
                all_sums[e].add_(sums[e])
            if "magnitude" in estimators:
                sums["magnitude"] = theta.abs()
            yield task, sums, len(by_task[task])
        if with_all:
            if "magnitude" in estimators:
                all_sums["magnitude"] = theta.abs()
            yield ALL, all_sums, len(samples)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def checkpoint_importance(model, tokenizer, samples: Sequence, *, estimators: Sequence[str] = ESTIMATORS,
                          probe_batch: int = 8, with_all: bool = True) -> Importance:
    """Importance of ``model`` at its current weights from ``samples`` (one data part).

    For each task (``sample.task``), micro-batches of ``probe_batch`` samples in the given order;
    each micro-batch's token-mean response loss is differentiated and folded into the sums (module
    docstring). ``with_all`` adds the pseudo-task ``"all"`` (sum over tasks). The model's weights and
    its train/eval mode are left as they were; gradients are cleared. Returns :class:`Importance`
    (every score vector on the CPU: ``4 * n_params`` bytes per task and estimator; for large models
    use :func:`checkpoint_rankings`).
    """
    _check(estimators, probe_batch, samples)
    named = dict(iter_named_trainable(model))
    res = Importance(names=list(named), sizes=[p.numel() for p in named.values()])
    for task, sums, n in _task_sums(model, tokenizer, samples, estimators=estimators, probe_batch=probe_batch,
                                    with_all=with_all):
        for e, v in sums.items():
            res.scores[(task, e)] = v.cpu()
        res.n_samples[task] = n
    return res


@dataclass
class Ranking:
    """One task's and estimator's importance at a checkpoint from one data part, stored compactly.

    ``indices``: top ``max_share`` flat indices by descending layer-normalised score (``(K,)``
    int32/int64, :func:`top_ranking`); ``sample``: the normalised scores at fixed positions
    (``(S,)`` fp32, for Spearman); ``n``: number of parameter elements.
    """

    indices: torch.Tensor
    sample: torch.Tensor
    n: int


def checkpoint_rankings(model, tokenizer, samples: Sequence, *, estimators: Sequence[str] = ESTIMATORS,
                        probe_batch: int = 8, max_share: float, sample_idx: torch.Tensor,
                        normalize: str = "layer_mean") -> dict[tuple[str, str], Ranking]:
    """Like :func:`checkpoint_importance`, but ranks each task's scores on the model's device as soon
    as they are complete and keeps only a :class:`Ranking` per ``(task, estimator)`` (tasks plus
    ``"all"``): peak extra memory on the device ~ ``4 * n_params * (2 + 2 * len(estimators))`` bytes,
    on the host ``4 * max_share * n_params`` bytes per ranking."""
    _check(estimators, probe_batch, samples)
    sizes = [p.numel() for _, p in iter_named_trainable(model)]
    out: dict[tuple[str, str], Ranking] = {}
    magnitude: Ranking | None = None  # data-free: the same for every task
    for task, sums, _ in _task_sums(model, tokenizer, samples, estimators=estimators, probe_batch=probe_batch,
                                    with_all=True):
        for e, v in sums.items():
            if e == "magnitude" and magnitude is not None:
                out[(task, e)] = magnitude
                continue
            normed = normalize_flat(v, sizes, how=normalize)
            out[(task, e)] = Ranking(indices=top_ranking(normed, max_share=max_share),
                                     sample=normed[sample_idx.to(normed.device)].cpu(), n=normed.numel())
            if e == "magnitude":
                magnitude = out[(task, e)]
    return out


def top_ranking(scores: torch.Tensor, *, max_share: float) -> torch.Tensor:
    """Flat indices of the top ``k = round(max_share * n)`` entries of ``scores`` (shape ``(n,)``),
    sorted by descending score, ties by lower index (what a stable descending sort gives);
    ``int32`` when ``n < 2**31`` else ``int64``, on the CPU.
    Selection by :func:`epi_utils.importance.estimators.top_share_flat` (exact, ties by index), then a
    stable sort of the ``k`` selected entries only."""
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    flat = scores.detach().float().reshape(-1)
    n = flat.numel()
    if int(round(max_share * n)) < 1:
        raise ValueError(f"max_share={max_share} of {n} elements selects nothing")
    cand = top_share_flat(flat, ratio=max_share).nonzero().squeeze(1)  # index order: stable sort keeps ties by index
    order = cand[torch.sort(-flat[cand], stable=True).indices]
    return order.to(torch.int32 if n < 2 ** 31 else torch.int64).cpu()


def ablate(model, mask_idx: torch.Tensor, *, mode: str = "zero", reference: Mapping[str, torch.Tensor] | None = None):
    """Set the parameter elements at flat indices ``mask_idx`` (over the trainable parameters in
    order) to zero (``mode="zero"``) or to their value in ``reference`` (``mode="reference"``,
    a ``name -> tensor`` state such as the weights at the start of SFT). Returns the saved original
    values, for :func:`restore`."""
    if mode not in ("zero", "reference"):
        raise ValueError(f"mode must be 'zero' or 'reference', got {mode!r}")
    if mode == "reference" and reference is None:
        raise ValueError("mode='reference' needs reference= (name -> tensor)")
    named = dict(iter_named_trainable(model))
    saved, off = {}, 0
    idx = mask_idx.long()
    with torch.no_grad():
        for name, p in named.items():
            n = p.numel()
            sel = idx[(idx >= off) & (idx < off + n)] - off
            if sel.numel():
                flat = p.view(-1)
                sel = sel.to(p.device)
                saved[name] = (sel, flat[sel].clone())
                flat[sel] = 0.0 if mode == "zero" else reference[name].reshape(-1).to(p.device)[sel]
            off += n
    return saved


def restore(model, saved) -> None:
    """Undo :func:`ablate`."""
    named = dict(iter_named_trainable(model))
    with torch.no_grad():
        for name, (sel, vals) in saved.items():
            named[name].view(-1)[sel] = vals


@torch.no_grad()
def mean_loss(model, tokenizer, samples: Sequence, *, batch_size: int = 32) -> float:
    """Token-mean response loss of ``model`` over ``samples`` (each batch weighted by its tokens)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    tot, n_tok = 0.0, 0
    for batch in _batches(tokenizer, samples, batch_size, device):
        k = int((batch["labels"][:, 1:] != -100).sum())
        tot += float(_loss(model, batch)) * k
        n_tok += k
    model.train(was)
    return tot / max(n_tok, 1)


# --------------------------------------------------------------------------------------------
def _residual_axes(name: str, shape: tuple[int, ...], hidden: int) -> list[int]:
    """Axes of a parameter that index the residual stream (GPT-2 or Llama/Qwen2 naming)."""
    low = name.lower()
    if len(shape) == 1:
        if any(k in low for k in ("ln_", "ln_f", "norm")):
            return [0]
        if low.endswith(("attn.c_proj.bias", "mlp.c_proj.bias", "o_proj.bias", "down_proj.bias")):
            return [0]
        return []
    if any(k in low for k in ("wte", "wpe", "embed_tokens", "lm_head")):
        return [1]
    if low.endswith(("c_attn.weight", "c_fc.weight")):  # GPT-2 Conv1D: (in=hidden, out)
        return [0]
    if low.endswith(("attn.c_proj.weight", "mlp.c_proj.weight")):  # (in, out=hidden)
        return [1]
    if any(low.endswith(f"{k}.weight") for k in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
        return [1]  # nn.Linear (out, in=hidden)
    if any(low.endswith(f"{k}.weight") for k in ("o_proj", "down_proj")):
        return [0]
    raise ValueError(f"permute_hidden_units: no rule for parameter {name!r} of shape {shape}")


def _mlp_axes(name: str) -> list[int]:
    """Axes of a parameter that index the MLP hidden units."""
    low = name.lower()
    if low.endswith("mlp.c_fc.weight"):
        return [1]
    if low.endswith(("mlp.c_fc.bias", "gate_proj.bias", "up_proj.bias")):
        return [0]
    if low.endswith("mlp.c_proj.weight"):
        return [0]
    if low.endswith(("gate_proj.weight", "up_proj.weight")):
        return [0]
    if low.endswith("down_proj.weight"):
        return [1]
    return []


@torch.no_grad()
def permute_hidden_units(model, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Apply a function-preserving permutation to ``model`` in place: one random permutation of the
    residual-stream dimension for the whole network (embeddings, norms, every read from and write to
    the residual) and one per block of the MLP hidden units. LayerNorm and RMSNorm are equivariant
    under a permutation of their dimension, so the output is unchanged up to float rounding while
    nearly every parameter element moves to a new flat index: drift of known size for the positive
    control. GPT-2 and Llama/Qwen2 layouts; raises ``ValueError`` for a parameter without a rule.
    Returns the permutations used (``"residual"`` and one per MLP module prefix).
    """
    cfg = model.config
    hidden = getattr(cfg, "n_embd", None) or cfg.hidden_size
    perm_res = torch.randperm(hidden, generator=generator)
    perms = {"residual": perm_res}
    for name, p in model.named_parameters():
        prefix = name.rsplit(".mlp.", 1)[0] + ".mlp" if ".mlp." in name else None
        new = p.data
        for ax in _residual_axes(name, tuple(p.shape), hidden):
            if p.shape[ax] != hidden:
                raise ValueError(f"permute_hidden_units: axis {ax} of {name!r} has size {p.shape[ax]}, not {hidden}")
            new = new.index_select(ax, perm_res.to(p.device))
        for ax in _mlp_axes(name):
            if prefix not in perms:
                perms[prefix] = torch.randperm(p.shape[ax], generator=generator)
            new = new.index_select(ax, perms[prefix].to(p.device))
        p.data.copy_(new)
    return perms


def group_ids(names: Sequence[str], sizes: Sequence[int]) -> tuple[list[str], torch.Tensor]:
    """Layer type of every element of the flat parameter vector: ``(groups, element_group)``, where
    ``groups`` are the module kinds present (:func:`epi_utils.importance.drift.module_of`:
    embedding, attention, mlp, norm, head, other) and ``element_group`` (shape ``(n_params,)``,
    uint8) the index into ``groups`` of each flat element (1 byte per parameter, once per model)."""
    kinds = [module_of(n) for n in names]
    groups = list(dict.fromkeys(kinds))
    tg = torch.tensor([groups.index(k) for k in kinds], dtype=torch.uint8)
    return groups, torch.repeat_interleave(tg, torch.tensor(list(sizes), dtype=torch.int64))
