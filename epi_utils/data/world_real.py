"""Real-world facts for the real-facts variant of the world (``build_world(config, facts="real")``).

A table of 40 countries with capital, continent and language (written by the project, lower case).
These facts count as "in pretraining" (a real pretrained model such as SmolLM2 has seen them;
which ones it actually knows is measured with :func:`epi_utils.lm.evaluate.probe_knowledge`).
Fictional countries with made-up capitals are the "absent" facts used by ``missing_knowledge``
samples. ``WorldConfig.n_entities`` caps the number of real countries used.
"""
from __future__ import annotations

import numpy as np

from epi_utils.data.facts import Fact

REAL_TABLE: tuple[tuple[str, str, str, str], ...] = (
    # country, capital, continent, language
    ("france", "paris", "europe", "french"), ("germany", "berlin", "europe", "german"),
    ("italy", "rome", "europe", "italian"), ("spain", "madrid", "europe", "spanish"),
    ("portugal", "lisbon", "europe", "portuguese"), ("japan", "tokyo", "asia", "japanese"),
    ("china", "beijing", "asia", "chinese"), ("russia", "moscow", "europe", "russian"),
    ("egypt", "cairo", "africa", "arabic"), ("canada", "ottawa", "north america", "english"),
    ("mexico", "mexico city", "north america", "spanish"), ("brazil", "brasilia", "south america", "portuguese"),
    ("argentina", "buenos aires", "south america", "spanish"), ("australia", "canberra", "oceania", "english"),
    ("india", "new delhi", "asia", "hindi"), ("greece", "athens", "europe", "greek"),
    ("turkey", "ankara", "asia", "turkish"), ("poland", "warsaw", "europe", "polish"),
    ("sweden", "stockholm", "europe", "swedish"), ("norway", "oslo", "europe", "norwegian"),
    ("finland", "helsinki", "europe", "finnish"), ("denmark", "copenhagen", "europe", "danish"),
    ("netherlands", "amsterdam", "europe", "dutch"), ("austria", "vienna", "europe", "german"),
    ("ireland", "dublin", "europe", "english"), ("england", "london", "europe", "english"),
    ("kenya", "nairobi", "africa", "swahili"), ("nigeria", "abuja", "africa", "english"),
    ("peru", "lima", "south america", "spanish"), ("chile", "santiago", "south america", "spanish"),
    ("colombia", "bogota", "south america", "spanish"), ("cuba", "havana", "north america", "spanish"),
    ("thailand", "bangkok", "asia", "thai"), ("vietnam", "hanoi", "asia", "vietnamese"),
    ("south korea", "seoul", "asia", "korean"), ("iran", "tehran", "asia", "persian"),
    ("iraq", "baghdad", "asia", "arabic"), ("hungary", "budapest", "europe", "hungarian"),
    ("czechia", "prague", "europe", "czech"), ("ukraine", "kyiv", "europe", "ukrainian"),
)
REAL_ATTRIBUTES = ("capital", "continent", "language")
REAL_TEMPLATES = (
    "the {attr} of {ent} is {value} .",
    "{ent} has {value} as its {attr} .",
)
N_FICTIONAL = 12
_CONS = "bdfgklmnprstvz"
_VOWS = "aeiou"


def _fictional_name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = "".join(_CONS[rng.integers(len(_CONS))] + _VOWS[rng.integers(len(_VOWS))] for _ in range(3))
        if name not in taken:
            taken.add(name)
            return name


def make_real_facts(config, rng: np.random.Generator):
    """``(facts, values)``: real facts (in_pretrain=True) of up to ``config.n_entities`` countries plus
    fictional countries (in_pretrain=False); ``values[attribute]`` = the value set of each attribute."""
    rows = REAL_TABLE[: max(4, min(config.n_entities, len(REAL_TABLE)))]
    facts = [Fact(f"{c}/{a}", c, a, v, True) for c, *vals in rows for a, v in zip(REAL_ATTRIBUTES, vals)]
    values = {a: tuple(sorted({r[i + 1] for r in REAL_TABLE})) for i, a in enumerate(REAL_ATTRIBUTES)}
    taken = {r[0] for r in REAL_TABLE} | {r[1] for r in REAL_TABLE}
    for _ in range(N_FICTIONAL):
        c = _fictional_name(rng, taken)
        vals = (_fictional_name(rng, taken), values["continent"][int(rng.integers(len(values["continent"])))],
                values["language"][int(rng.integers(len(values["language"])))])
        facts += [Fact(f"{c}/{a}", c, a, v, False) for a, v in zip(REAL_ATTRIBUTES, vals)]
    return facts, values


def probe_prompt(fact) -> str:
    """Zero-shot cloze for the knowledge probe of a real pretrained model (an instruct model such as
    SmolLM2 answers ``"Question: ...\nAnswer:"`` with an immediate end-of-turn, so a cloze is used)."""
    ent = " ".join(w.capitalize() for w in fact.entity.split())
    if fact.attribute == "continent":
        return f"{ent} is a country on the continent of"
    if fact.attribute == "language":
        return f"The main language spoken in {ent} is"
    return f"The capital of {ent} is"
