"""Knowledge probe of the base (pre-SFT) model, for the missing-knowledge and conflict signals.

For every training sample that asks about a fact (``Sample.fact_id`` set), the base model reads a
*cloze/QA probe* of that fact (the world's recall template, ``"the {attr} of {ent} is"``, or the
real-facts QA prompt) and scores every candidate answer of the fact's attribute (the values that
attribute takes in the world: the answer space, not the truth) by its teacher-forced sequence
log-likelihood (for a real pretrained model the candidates are scored title-cased, as running
text writes names). Softmax over candidates gives a distribution; from it:

- ``target_prob``: probability of the SFT target's answer; ``target_rank``: its 1-based rank;
- ``base_answer`` / ``base_answer_prob``: the model's favourite candidate (its greedy answer
  restricted to the answer space) and its probability.

These are the raw columns :func:`epi_utils.ilp.signals.probe_signals` categorises into
known / maybe_known / unknown (Gekhman et al. 2024) and turns into the conflict flag. The SFT
target's answer is read from the *response* (the candidate the response starts with), never from
the world's ground truth, so a conflicting sample is probed with its conflicting answer.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import pandas as pd
import torch


def probe_prompt(world, fact) -> str:
    """The probe text for ``fact`` in ``world`` (synthetic: recall cloze; real: QA prompt)."""
    if getattr(world, "kind", "synthetic") == "real":
        from epi_utils.data.world_real import probe_prompt as real_prompt
        return real_prompt(fact)
    from epi_utils.data.world import RECALL_TEMPLATE
    return RECALL_TEMPLATE.format(attr=fact.attribute, ent=fact.entity)


def answer_space(world) -> dict[str, list[str]]:
    """attribute -> sorted distinct values it takes among the world's facts."""
    space: dict[str, set] = defaultdict(set)
    for f in world.facts:
        space[f.attribute].add(f.value)
    return {a: sorted(v) for a, v in space.items()}


def target_answer(response: str, candidates: Sequence[str]) -> str:
    """The candidate the response starts with (longest first); the whole response otherwise.

    ``"red and paris"`` with candidates ``["red", "blue"]`` -> ``"red"``."""
    words = response.strip().lower().split()
    for cand in sorted(candidates, key=lambda c: -len(c.split())):
        cw = cand.lower().split()
        if words[:len(cw)] == cw:
            return cand
    return response.strip()


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], *,
                      batch_size: int = 64) -> np.ndarray:
    """Sum of token log-probabilities of each ``" " + continuation`` after its raw prompt, ``(n,)``.

    Batches group equal total lengths, so no padding is needed (exact for any causal LM)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    enc = []
    for p, c in zip(prompts, continuations):
        pi = tokenizer(p, add_special_tokens=False)["input_ids"]
        ci = tokenizer(" " + c, add_special_tokens=False)["input_ids"]
        enc.append((pi + ci, len(pi)))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (ids, _) in enumerate(enc):
        groups[len(ids)].append(i)
    out = np.zeros(len(enc))
    for _, idx in sorted(groups.items()):
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            x = torch.tensor([enc[i][0] for i in chunk], dtype=torch.long, device=dev)
            logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
            for row, i in enumerate(chunk):
                ids, lp = enc[i]
                pos = torch.arange(lp - 1, len(ids) - 1, device=dev)
                tgt = x[row, lp:]
                out[i] = float(logp[row, pos, tgt].sum())
    model.train(was_training)
    return out


def knowledge_probe(model, tokenizer, world, samples: Sequence, *, batch_size: int = 64) -> pd.DataFrame:
    """Raw probe table for the samples with a ``fact_id`` (others are skipped).

    Returns one row per probed sample with ``sample_id, fact_id, probe_prompt, target_answer,
    target_prob, target_rank, base_answer, base_answer_prob, n_candidates``: the input of
    :func:`epi_utils.ilp.signals.probe_signals` (after renaming ``target_answer`` to ``response``;
    :func:`probe_table_for_signals` does it)."""
    facts = {f.fact_id: f for f in world.facts}
    space = answer_space(world)
    real = getattr(world, "kind", "synthetic") == "real"
    rows, prompts, conts, owner = [], [], [], []
    for s in samples:
        if not s.fact_id:
            continue
        if s.fact_id not in facts:
            raise ValueError(f"sample {s.id}: fact_id {s.fact_id!r} is not a fact of this world")
        f = facts[s.fact_id]
        cands = list(space[f.attribute])
        tgt = target_answer(s.response, cands)
        if tgt not in cands:
            cands.append(tgt)
        prompt = probe_prompt(world, f)
        rows.append({"sample_id": s.id, "fact_id": s.fact_id, "probe_prompt": prompt, "target_answer": tgt,
                     "candidates": cands})
        for c in cands:
            prompts.append(prompt)
            conts.append(c.title() if real else c)   # real model: "Paris", "South America"
            owner.append(len(rows) - 1)
    if not rows:
        return pd.DataFrame(columns=["sample_id", "fact_id", "probe_prompt", "target_answer", "target_prob",
                                     "target_rank", "base_answer", "base_answer_prob", "n_candidates"])
    lp = sequence_logprobs(model, tokenizer, prompts, conts, batch_size=batch_size)
    owner = np.asarray(owner)
    for r, row in enumerate(rows):
        scores = lp[owner == r]
        p = np.exp(scores - scores.max())
        p /= p.sum()
        cands = row.pop("candidates")
        t = cands.index(row["target_answer"])
        best = int(np.argmax(p))
        row.update(target_prob=float(p[t]), target_rank=int(1 + (p > p[t]).sum()), base_answer=cands[best],
                   base_answer_prob=float(p[best]), n_candidates=len(cands))
    return pd.DataFrame(rows)


def probe_table_for_signals(raw: pd.DataFrame) -> pd.DataFrame:
    """The raw probe table with ``target_answer`` as ``response`` (what the signals compare)."""
    return raw.rename(columns={"target_answer": "response"})
