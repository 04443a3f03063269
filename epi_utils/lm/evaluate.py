"""Evaluation: batched greedy decoding, exact match, pass@N, per-task accuracy, teacher-forced stats,
and scores for free-form answers.

:func:`greedy_generate` groups prompts of equal token length, so no padding is ever needed (exact
for every causal LM, with the KV cache; fast when prompts share few lengths, as in the synthetic
world). :func:`generate_left_padded` batches prompts of any length with left padding and
``model.generate`` (the path for real data sets, whose prompts all differ in length), with a
capped ``max_new_tokens``. A generation stops at the tokenizer's EOS token.

Free-form answers (Alpaca, CodeAlpaca) are scored beside exact match by :func:`token_f1` (SQuAD's
bag-of-tokens F1, Rajpurkar et al. 2016) and :func:`rouge_l` (LCS F-measure, Lin 2004); GSM8K by
its final answer (:func:`gsm8k_final_answer`: the number after ``####``, else the last number),
so the reasoning can stay in the target. :func:`score_predictions` applies one of ``METRICS``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from epi_utils.data.world import RECALL_TEMPLATE
from epi_utils.data.world_real import probe_prompt
from epi_utils.lm.sft_format import encode_example, encode_prompt

NORMALIZE = ("strip", "lower", "none")
METRICS = ("exact", "token_f1", "rouge_l", "gsm8k")


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
    done = [False] * B  # per row: EOS already produced (one host copy of the tokens per step)
    for t in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(ids.device)
        else:
            nxt = logits.argmax(dim=-1)
        for b, tok in enumerate(nxt.tolist()):
            if not done[b]:
                gen[b].append(tok)
                done[b] = tok == eos_id
        if all(done) or t == max_new_tokens - 1:
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
        prompts = [probe_prompt(f) for f in facts]
    else:
        prompts = [RECALL_TEMPLATE.format(attr=f.attribute, ent=f.entity) for f in facts]
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, raw=True)
    known = {}
    for f, o in zip(facts, outs):
        words = [w.strip(".,!?;:\"'()").lower() for w in o.split()[:4]]
        val = f.value.lower().split()
        known[f.fact_id] = any(words[i:i + len(val)] == val for i in range(len(words)))
    return known


# ----------------------------------------------------------------------------- left-padded decoding
@torch.no_grad()
def generate_left_padded(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 32,
                         raw: bool = False) -> list[str]:
    """Greedy continuations of ``prompts`` (in order) in left-padded batches of ``batch_size``.

    Prompts are sorted by token length (less padding), left-padded with the tokenizer's pad id and
    decoded by ``model.generate`` (greedy; position ids follow the attention mask), up to EOS or
    ``max_new_tokens`` new tokens. Same text as :func:`greedy_generate` for every causal LM whose
    ``generate`` handles left padding (GPT-2, Llama, Qwen2 in transformers).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    dev = _device(model)
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] if raw else encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    outs: list[str] = [""] * len(prompts)
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        L = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), L), pad, dtype=torch.long)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, L - len(ids[i]):] = torch.tensor(ids[i])
            att[r, L - len(ids[i]):] = 1
        gen = model.generate(input_ids=x.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        for r, i in enumerate(idx):
            outs[i] = _to_text(tokenizer, gen[r, L:].tolist())
    model.train(was_training)
    return outs


# ----------------------------------------------------------------------------- free-form scores
def _words(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (SQuAD's normalisation, without article removal)."""
    import string

    table = str.maketrans({c: " " for c in string.punctuation})
    return text.lower().translate(table).split()


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two texts (Rajpurkar et al. 2016): ``2PR/(P+R)`` with ``P`` = shared
    words / prediction words, ``R`` = shared words / reference words (multiset counts). Two empty
    texts score 1, one empty text 0."""
    from collections import Counter

    p, r = _words(prediction), _words(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin 2004, beta = 1) on words: ``2PR/(P+R)`` with ``P = LCS/|prediction|``,
    ``R = LCS/|reference|``, LCS the longest common subsequence. Empty texts as :func:`token_f1`."""
    p, r = _words(prediction), _words(reference)
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def gsm8k_final_answer(text: str) -> str | None:
    """The final answer of a GSM8K solution: the number after the last ``####`` if there is one,
    else the last number in the text; commas, ``$`` and a trailing ``.`` removed (``"1,200."`` ->
    ``"1200"``). ``None`` when there is no number."""
    import re

    tail = text.split("####")[-1] if "####" in text else text
    nums = re.findall(r"-?\$?\d[\d,]*(?:\.\d+)?", tail)
    if not nums:
        return None
    ans = nums[0] if "####" in text else nums[-1]
    ans = ans.replace(",", "").replace("$", "").rstrip(".")
    try:
        val = float(ans)
    except ValueError:
        return None
    return str(int(val)) if val == int(val) else str(val)


def score_predictions(predictions: Sequence[str], references: Sequence[str], *, metric: str) -> np.ndarray:
    """Per-sample scores in [0, 1], shape ``(n,)``: ``metric`` one of ``METRICS`` (``exact``: whitespace-
    collapsed equality; ``gsm8k``: equal final answers, :func:`gsm8k_final_answer`)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if metric == "exact":
        f = lambda p, r: float(_norm(p, "strip") == _norm(r, "strip"))  # noqa: E731
    elif metric == "token_f1":
        f = token_f1
    elif metric == "rouge_l":
        f = rouge_l
    else:
        def f(p, r):
            a, b = gsm8k_final_answer(p), gsm8k_final_answer(r)
            return float(a is not None and a == b)
    return np.array([f(p, r) for p, r in zip(predictions, references)], dtype=float)
