"""Knowledge probe of the base (pre-SFT) model, read from the SFT samples' own text.

A user who fine-tunes a model has the SFT data and the base model; nothing else. So the probe
feeds each sample's *prompt* to the base model and reads, per sample:

- ``base_answer``: the base model's greedy continuation, cut to as many words as the target has;
- ``base_conf``: geometric-mean token probability of that answer (teacher-forced after the prompt);
- ``target_prob``: geometric-mean token probability of the SFT target (the base model's
  per-token perplexity of the target is ``1 / target_prob``);
- ``known``: the base answer equals the target (after lower-casing and removing punctuation).

``fmt`` chooses how the prompt is fed: ``"raw"`` (the text as is: a base model pretrained on
running text, as the ``tiny`` model, which reads cloze prompts like its corpus) or ``"sft"`` (the
prompt with the SFT separator, as an instruction-tuned model expects a question).

These raw columns are categorised by :func:`epi_utils.ilp.signals.probe_signals` into known /
maybe-known / unknown (Gekhman et al. 2024, "Does fine-tuning LLMs on new knowledge encourage
hallucinations?") and into the conflict flag. No generator field (fact ids, planted labels, the
world's fact table) is read here.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import pandas as pd
import torch

PROBE_FORMATS = ("raw", "sft")


def _prompt_ids(tokenizer, prompt: str, fmt: str) -> list[int]:
    from epi_utils.lm.sft_format import encode_prompt

    if fmt == "sft":
        return encode_prompt(tokenizer, prompt)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def mean_logprobs(model, tokenizer, prompt_ids: Sequence[list[int]], continuations: Sequence[str], *,
                  batch_size: int = 64) -> np.ndarray:
    """Mean token log-probability of each ``" " + continuation`` after its prompt ids, ``(n,)``.

    Batches group equal total lengths, so no padding is needed (exact for any causal LM). An empty
    continuation scores ``-inf``."""
    if len(prompt_ids) != len(continuations):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(continuations)} continuations")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    enc = []
    for p, c in zip(prompt_ids, continuations):
        ci = tokenizer(" " + c, add_special_tokens=False)["input_ids"] if c.strip() else []
        enc.append((list(p) + ci, len(p)))
    out = np.full(len(enc), -np.inf)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (ids, lp) in enumerate(enc):
        if len(ids) > lp:
            groups[len(ids)].append(i)
    for _, idx in sorted(groups.items()):
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            x = torch.tensor([enc[i][0] for i in chunk], dtype=torch.long, device=dev)
            logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
            for row, i in enumerate(chunk):
                ids, lp = enc[i]
                pos = torch.arange(lp - 1, len(ids) - 1, device=dev)
                out[i] = float(logp[row, pos, x[row, lp:]].mean())
    model.train(was_training)
    return out


def _norm_words(text: str) -> list[str]:
    from epi_utils.ilp.signals import normalize_text
    return normalize_text(text, mode="alnum").split()


@torch.no_grad()
def knowledge_probe(model, tokenizer, samples: Sequence, *, fmt: str = "raw", batch_size: int = 64) -> pd.DataFrame:
    """Probe table, one row per sample: ``sample_id, response, base_answer, base_conf, target_prob, known``.

    ``samples``: objects with ``id``, ``prompt`` and ``response`` (the SFT data). See the module
    docstring for the columns."""
    from epi_utils.lm.evaluate import _decode_loop, _length_batches, _to_text

    if fmt not in PROBE_FORMATS:
        raise ValueError(f"probe format must be one of {PROBE_FORMATS}, got {fmt!r}")
    samples = list(samples)
    if not samples:
        raise ValueError("knowledge_probe: no samples")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    ids = [_prompt_ids(tokenizer, s.prompt, fmt) for s in samples]
    n_tok = [len(tokenizer(" " + s.response, add_special_tokens=False)["input_ids"]) for s in samples]
    answers = [""] * len(samples)
    for idx in _length_batches(ids, batch_size):
        x = torch.tensor([ids[i] for i in idx], dtype=torch.long, device=dev)
        gen = _decode_loop(model, x, max_new_tokens=max(n_tok[i] for i in idx) + 2, eos_id=tokenizer.eos_token_id)
        for i, g in zip(idx, gen):
            n_words = max(1, len(samples[i].response.split()))
            answers[i] = " ".join(_to_text(tokenizer, g).split()[:n_words])
    model.train(was_training)
    base_lp = mean_logprobs(model, tokenizer, ids, answers, batch_size=batch_size)
    tgt_lp = mean_logprobs(model, tokenizer, ids, [s.response for s in samples], batch_size=batch_size)
    return pd.DataFrame({
        "sample_id": [s.id for s in samples],
        "response": [s.response for s in samples],
        "base_answer": answers,
        "base_conf": np.exp(base_lp),
        "target_prob": np.exp(tgt_lp),
        "known": [_norm_words(a) == _norm_words(s.response) for a, s in zip(answers, samples)],
    })
