"""Synthetic documents with planted event records, in the Doc2EDAG layout.

Used by the tests and the smoke profile, and as the notebook's sanity check (a model that works
must recover the planted records, F1 near 1). Every name comes from the schema: each event type
and role gets a short marker derived from its position in the schema (``#A#`` for the first
event type, ``<a>`` for the first field in :meth:`EventSchema.all_fields`), so a made-up schema
yields made-up documents. Each record is written as one sentence::

    <type marker>：<role marker><argument>，<role marker><argument>，...。

between filler sentences (random characters, optionally with entity-only distractor mentions).
Arguments are random strings, unique per document except where ``share_prob`` copies the
argument of the same role from an earlier record of the same type (argument sharing between
records, as for a pledger who pledges twice).
"""
from __future__ import annotations

import string
from typing import Any

import numpy as np

from epi_utils.events.schema import EventSchema

_FILLER = "的了是在和有公司本次股东事项董事会公告相关情况根据规定已经进行完成披露"
_ARG_CHARS = string.digits + "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥"


def _code(i: int) -> str:
    letters = string.ascii_lowercase
    return letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26]


def markers(schema: EventSchema) -> tuple[dict[str, str], dict[str, str]]:
    """``(type -> marker, field -> marker)`` as described in the module docstring."""
    tmark = {t: f"#{_code(i).upper()}#" for i, t in enumerate(schema.event_types)}  # no character shared with role markers
    fmark = {f: f"<{_code(i)}>" for i, f in enumerate(schema.all_fields())}
    return tmark, fmark


def _new_arg(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        n = int(rng.integers(3, 7))
        s = "".join(rng.choice(list(_ARG_CHARS), size=n))
        if s not in used:
            used.add(s)
            return s


def generate_documents(schema: EventSchema, *, n_docs: int, rng: np.random.Generator,
                       min_events: int = 1, max_events: int = 4, share_prob: float = 0.3,
                       fill_prob: float = 0.7, n_filler: int = 3, id_prefix: str = "syn"
                       ) -> list[list[Any]]:
    """``n_docs`` raw ``[doc_id, doc]`` pairs with planted records.

    Each document holds ``k ~ U{min_events..max_events}`` records of random types; every record
    fills its first role and each other role with probability ``fill_prob``; ``share_prob`` is
    the chance that a filled role reuses an earlier same-type record's argument for that role.
    """
    if not (1 <= min_events <= max_events):
        raise ValueError(f"need 1 <= min_events <= max_events, got {min_events}, {max_events}")
    if not (0 <= share_prob <= 1 and 0 <= fill_prob <= 1):
        raise ValueError("share_prob and fill_prob must be in [0, 1]")
    tmark, fmark = markers(schema)
    out = []
    for d in range(n_docs):
        k = int(rng.integers(min_events, max_events + 1))
        used: set[str] = set()
        records, rec_sents = [], []
        for j in range(k):
            t = int(rng.integers(schema.num_types))
            etype, roles = schema.event_types[t], schema.roles[t]
            prev = [r for r in records if r[1] == etype]
            args = {}
            for i, role in enumerate(roles):
                if i > 0 and rng.random() > fill_prob:
                    args[role] = None
                    continue
                shared = [p[2][role] for p in prev if p[2][role] is not None]
                if shared and rng.random() < share_prob:
                    args[role] = shared[int(rng.integers(len(shared)))]
                else:
                    args[role] = _new_arg(rng, used)
            records.append([f"{id_prefix}{d}-r{j}", etype, args])
            parts = [f"{fmark[role]}{a}" for role, a in args.items() if a is not None]
            rec_sents.append(tmark[etype] + "：" + "，".join(parts) + "。")
        fillers = []
        for _ in range(n_filler):
            s = "".join(rng.choice(list(_FILLER), size=int(rng.integers(8, 20))))
            if schema.entity_fields and rng.random() < 0.5:
                f = schema.entity_fields[int(rng.integers(len(schema.entity_fields)))]
                s += fmark[f] + _new_arg(rng, used)
            fillers.append(s + "。")
        sentences = [fillers[0]] + rec_sents + fillers[1:]
        m2r: dict[str, list] = {}
        m2f: dict[str, str] = {}
        for si, sent in enumerate(sentences):
            for field, mk in fmark.items():
                start = 0
                while (pos := sent.find(mk, start)) >= 0:
                    a = pos + len(mk)
                    b = a
                    while b < len(sent) and sent[b] in _ARG_CHARS:
                        b += 1
                    m = sent[a:b]
                    m2r.setdefault(m, []).append([si, a, b])
                    m2f.setdefault(m, field)
                    start = b
        doc = {"sentences": sentences, "ann_valid_mspans": list(m2r),
               "ann_valid_dranges": [r for rs in m2r.values() for r in rs],
               "ann_mspan2dranges": m2r, "ann_mspan2guess_field": m2f,
               "recguid_eventname_eventdict_list": records}
        out.append([f"{id_prefix}{d}", doc])
    return out
