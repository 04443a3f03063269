"""Evaluation: batched greedy decoding, exact match, pass@N, per-task accuracy, teacher-forced stats.

Decoding batches group prompts of equal token length, so no padding is ever needed (exact for
every causal LM, with the KV cache). A generation stops at the tokenizer's EOS token.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from epi_utils.lm.sft_format import encode_example, encode_prompt

NORMALIZE = ("strip", "lower", "none")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _length_batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(ids):
        groups[len(x)].append(i)
    out = []
    for L in sorted(groups):
        g = groups[L]
        out.extend(g[k:k + batch_size] for k in range(0, len(g), batch_size))
    return out


@torch.no_grad()
def _decode_loop(model, ids: torch.Tensor, *, max_new_tokens: int, eos_id: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """Greedy (``temperature == 0``) or sampled continuation of equal-length prompts ``ids`` (B, L)."""
    B = ids.shape[0]
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    past = out.cache
    logits = out.logits[:, -1, :]
    gen: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    for t in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(ids.device)
        else:
            nxt = logits.argmax(dim=-1)
        for b in range(B):
            if not done[b]:
                gen[b].append(int(nxt[b]))
        done |= nxt == eos_id
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        out = model(input_ids=nxt[:, None], cache=past, use_cache=True, logits_to_keep=1)
        past = out.cache
        logits = out.logits[:, -1, :]
    return gen


def _to_text(tokenizer, tokens: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos in tokens:
        tokens = tokens[:tokens.index(eos)]
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def greedy_generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 32,
                    raw: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (in order), up to EOS or ``max_new_tokens`` tokens.

    ``raw=False`` formats each prompt with the SFT separator (:mod:`epi_utils.lm.sft_format`);
    ``raw=True`` feeds the text as is (cloze probes of a pretrained model).
    """
    return _generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, raw=raw)


def _generate(model, tokenizer, prompts, *, max_new_tokens, batch_size, raw, temperature=0.0, generator=None):
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    was_training = model.training
    model.eval()
    dev = _device(model)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] if raw else encode_prompt(tokenizer, p) for p in prompts]
    outs: list[str] = [""] * len(prompts)
    for idx in _length_batches(ids, batch_size):
        x = torch.tensor([ids[i] for i in idx], dtype=torch.long, device=dev)
        gen = _decode_loop(model, x, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
                           temperature=temperature, generator=generator)
        for i, g in zip(idx, gen):
            outs[i] = _to_text(tokenizer, g)
    model.train(was_training)
    return outs


def _norm(text: str, normalize: str) -> str:
    if normalize == "none":
        return text
    text = " ".join(text.split())
    return text.lower() if normalize == "lower" else text


def _max_new(tokenizer, samples, max_new_tokens: int | None) -> int:
    if max_new_tokens is not None:
        return max_new_tokens
    longest = max(len(tokenizer(" " + s.response, add_special_tokens=False)["input_ids"]) for s in samples)
    return longest + 2


def exact_match(model, tokenizer, samples: Sequence, *, normalize: str = "strip", max_new_tokens: int | None = None,
                batch_size: int = 32, return_predictions: bool = False):
    """Greedy exact match per sample, bool array ``(n,)``.

    ``normalize``: ``"strip"`` (collapse whitespace), ``"lower"`` (and lower-case) or ``"none"``.
    ``max_new_tokens`` defaults to the longest reference response + 2 tokens. With
    ``return_predictions=True`` returns ``(correct, predictions)``.
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    if len(samples) == 0:
        return (np.zeros(0, dtype=bool), []) if return_predictions else np.zeros(0, dtype=bool)
    preds = greedy_generate(model, tokenizer, [s.prompt for s in samples],
                            max_new_tokens=_max_new(tokenizer, samples, max_new_tokens), batch_size=batch_size)
    correct = np.array([_norm(p, normalize) == _norm(s.response, normalize) for p, s in zip(preds, samples)], dtype=bool)
    return (correct, preds) if return_predictions else correct


def pass_at_n(model, tokenizer, samples: Sequence, *, n: int, temperature: float, generator: torch.Generator,
              normalize: str = "strip", max_new_tokens: int | None = None, batch_size: int = 32) -> np.ndarray:
    """Whether any of ``n`` samples at ``temperature`` matches the reference exactly, bool array ``(len(samples),)``.

    ``generator``: a CPU ``torch.Generator`` (the sampling randomness). ``temperature`` must be > 0.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for pass@n sampling, got {temperature!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    if len(samples) == 0:
        return np.zeros(0, dtype=bool)
    prompts = [s.prompt for s in samples for _ in range(n)]
    preds = _generate(model, tokenizer, prompts, max_new_tokens=_max_new(tokenizer, samples, max_new_tokens),
                      batch_size=batch_size, raw=False, temperature=float(temperature), generator=generator)
    hit = np.array([_norm(p, normalize) == _norm(samples[i // n].response, normalize) for i, p in enumerate(preds)])
    return hit.reshape(len(samples), n).any(axis=1)


def task_accuracy(samples: Sequence, correct) -> dict[str, float]:
    """Mean of ``correct`` per ``sample.task`` (tasks in first-seen order)."""
    correct = np.asarray(correct, dtype=float)
    if len(correct) != len(samples):
        raise ValueError(f"correct has {len(correct)} entries but there are {len(samples)} samples")
    acc: dict[str, list[float]] = {}
    for s, c in zip(samples, correct):
        acc.setdefault(s.task, []).append(c)
    return {t: float(np.mean(v)) for t, v in acc.items()}


@torch.no_grad()
def response_stats(model, tokenizer, samples: Sequence, *, batch_size: int = 64) -> list[dict]:
    """Teacher-forced per-sample ``{"sample_id", "loss", "mean_token_prob"}`` over response tokens (+EOS).

    ``loss`` = mean negative log-likelihood of the response tokens; ``mean_token_prob`` = mean of
    their probabilities (the "confidence" of Swayamdipta et al., 2020, dataset cartography).
    """
    was_training = model.training
    model.eval()
    dev = _device(model)
    enc = [encode_example(tokenizer, s.prompt, s.response) for s in samples]
    res: list[dict] = [None] * len(samples)  # type: ignore[list-item]
    for idx in _length_batches([e[0] for e in enc], batch_size):
        x = torch.tensor([enc[i][0] for i in idx], dtype=torch.long, device=dev)
        y = torch.tensor([enc[i][1] for i in idx], dtype=torch.long, device=dev)
        logp = torch.log_softmax(model(input_ids=x).logits[:, :-1].float(), dim=-1)
        tgt = y[:, 1:]
        mask = tgt != -100
        lp = logp.gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
        for row, i in enumerate(idx):
            v = lp[row][mask[row]]
            res[i] = {"sample_id": samples[i].id, "loss": float(-v.mean()), "mean_token_prob": float(v.exp().mean())}
    model.train(was_training)
    return res


def probe_knowledge(model, tokenizer, world, *, facts=None, max_new_tokens: int = 6, batch_size: int = 32) -> dict[str, bool]:
    """Which facts the model already knows: ``{fact_id: known}`` from greedy answers to the main
    fact-QA prompt (raw, zero-shot; known = the value appears among the first words of the answer).

    For the real-facts world (SmolLM2) the prompt is ``"Question: What is the capital of France?\\nAnswer:"``.
    """
    facts = list(world.facts if facts is None else facts)
    if getattr(world, "kind", "synthetic") == "real":
        from epi_utils.data.world_real import probe_prompt
        prompts = [probe_prompt(f) for f in facts]
    else:
        from epi_utils.data.world import RECALL_TEMPLATE
        prompts = [RECALL_TEMPLATE.format(attr=f.attribute, ent=f.entity) for f in facts]
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, raw=True)
    known = {}
    for f, o in zip(facts, outs):
        words = [w.strip(".,!?;:\"'()").lower() for w in o.split()[:4]]
        val = f.value.lower().split()
        known[f.fact_id] = any(words[i:i + len(val)] == val for i in range(len(words)))
    return known
