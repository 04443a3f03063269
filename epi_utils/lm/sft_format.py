"""The one prompt/response format of the testbed: ``prompt + SEP + " " + response + EOS``.

* word-level ``tiny`` tokenizer (has a ``<sep>`` token): ``SEP = " <sep>"``;
* any other tokenizer: ``SEP = "\\nAnswer:"``.

The loss is taken on the response tokens and the EOS token only (labels ``-100`` elsewhere).
Prompt and response are tokenized separately and concatenated, so the prompt part of the token
sequence is exactly what :func:`epi_utils.lm.evaluate.greedy_generate` feeds at decoding time.

Encodings are memoised per tokenizer (:func:`encode_prompt`, :func:`encode_example`): training
re-encodes every batch each epoch and evaluation re-encodes every prompt at each check, which
took a quarter of an SFT run's time on ``tiny`` (and ``separator`` built the whole vocabulary as a
dict on every call). The cache holds the token ids of each distinct text once, keyed weakly by the
tokenizer object and reset when its vocabulary size changes (tokens added); callers get fresh lists.
"""
from __future__ import annotations

import weakref

_CACHE_LIMIT = 200_000  # distinct texts per tokenizer before its cache is cleared (bounds memory)
_caches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_enabled = [True]


def set_encoding_cache(enabled: bool) -> bool:
    """Turn the per-tokenizer encoding cache on or off (``benchmarks/bench_encoding.py`` times
    both); returns the previous setting. Turning it off also empties it."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    previous, _enabled[0] = _enabled[0], enabled
    if not enabled:
        _caches.clear()
    return previous


def _cache(tokenizer) -> dict | None:
    """The encoding cache of ``tokenizer`` (``{"size", "sep", "prompt", "response"}``), or None when
    the tokenizer cannot be weakly referenced or the cache is off (then nothing is cached)."""
    if not _enabled[0]:
        return None
    try:
        c = _caches.get(tokenizer)
    except TypeError:
        return None
    size = len(tokenizer)
    if c is None or c["size"] != size:
        c = {"size": size, "sep": None, "prompt": {}, "response": {}}
        try:
            _caches[tokenizer] = c
        except TypeError:
            return None
    return c


def _memo(tokenizer, kind: str, text: str, encode) -> list[int]:
    c = _cache(tokenizer)
    if c is None:
        return encode()
    table = c[kind]
    ids = table.get(text)
    if ids is None:
        if len(table) >= _CACHE_LIMIT:
            table.clear()
        ids = table[text] = tuple(encode())
    return list(ids)


def separator(tokenizer) -> str:
    """The prompt/response separator for ``tokenizer``."""
    c = _cache(tokenizer)
    if c is not None and c["sep"] is not None:
        return c["sep"]
    sep = " <sep>" if "<sep>" in tokenizer.get_vocab() else "\nAnswer:"
    if c is not None:
        c["sep"] = sep
    return sep


def prompt_text(tokenizer, prompt: str) -> str:
    return prompt + separator(tokenizer)


def format_example(tokenizer, prompt: str, response: str) -> str:
    """The full training string ``prompt + SEP + " " + response + EOS``."""
    return prompt_text(tokenizer, prompt) + " " + response + tokenizer.eos_token


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt + SEP`` (memoised per tokenizer)."""
    return _memo(tokenizer, "prompt", prompt,
                 lambda: tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def encode_example(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one sample; labels are ``-100`` on the prompt part."""
    p = encode_prompt(tokenizer, prompt)
    r = _memo(tokenizer, "response", response,
              lambda: tokenizer(" " + response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    return p + r, [-100] * len(p) + r


def pad_id(tokenizer) -> int:
    """The padding token id (EOS when the tokenizer has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def pad_batch(rows, *, pad_token_id: int) -> dict:
    """Right-pad encoded examples into tensors.

    ``rows``: sequence of ``(input_ids, labels)`` from :func:`encode_example`. Returns
    ``{"input_ids", "attention_mask", "labels"}``, each a ``(batch, max_len)`` long tensor; padding
    positions get ``pad_token_id``, attention 0 and label -100.
    """
    import torch

    width = max(len(x) for x, _ in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        attention[i, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}
