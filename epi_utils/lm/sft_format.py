"""The one prompt/response format of the testbed: ``prompt + SEP + " " + response + EOS``.

* word-level ``tiny`` tokenizer (has a ``<sep>`` token): ``SEP = " <sep>"``;
* any other tokenizer: ``SEP = "\\nAnswer:"``.

The loss is taken on the response tokens and the EOS token only (labels ``-100`` elsewhere).
Prompt and response are tokenized separately and concatenated, so the prompt part of the token
sequence is exactly what :func:`epi_utils.lm.evaluate.greedy_generate` feeds at decoding time.
"""
from __future__ import annotations


def separator(tokenizer) -> str:
    """The prompt/response separator for ``tokenizer``."""
    return " <sep>" if "<sep>" in tokenizer.get_vocab() else "\nAnswer:"


def prompt_text(tokenizer, prompt: str) -> str:
    return prompt + separator(tokenizer)


def format_example(tokenizer, prompt: str, response: str) -> str:
    """The full training string ``prompt + SEP + " " + response + EOS``."""
    return prompt_text(tokenizer, prompt) + " " + response + tokenizer.eos_token


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one sample; labels are ``-100`` on the prompt part."""
    p = encode_prompt(tokenizer, prompt)
    r = tokenizer(" " + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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
