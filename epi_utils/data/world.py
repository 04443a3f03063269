"""A synthetic knowledge world and SFT task suite with planted causes of incomplete learning.

The world is deterministic for ``WorldConfig.seed``. It holds

* **facts**: entities (made-up names) x attributes (colour, city, food, animal, job), each with a
  value; a share ``pretrain_fact_fraction`` of them is stated in the **pretraining corpus** in
  several surface templates (``PRETRAIN_TEMPLATES``); the rest are *absent* from pretraining. The
  corpus also holds ``N_BACKGROUND`` background sentences (counting, letter and month runs) so that
  task words are known to the pretrained model;
* **SFT samples** of six tasks that need different abilities (``TASKS``): fact question
  answering (knowledge recall), arithmetic, string reversal, sorting, in-context key lookup and
  format conversion (month names to numbers). Each task has ``train`` and ``heldout`` samples in
  one prompt/response format (see :func:`epi_utils.lm.train.format_example`);
* **planted causes** (ground truth in ``Sample.planted_cause``, never used by detectors), the five
  causes of the ILP taxonomy (incomplete learning phenomenon):

  ``missing_knowledge``  fact-QA about a fact absent from the pretraining corpus;
  ``conflict``           fact-QA whose SFT answer contradicts the pretraining corpus
                         (``Sample.pretrain_answer`` holds the corpus' answer);
  ``inconsistency``      the same prompt appears twice in train with different responses
                         (both copies carry the label);
  ``forgetting``         a stage-0 sample whose prompt is retrained with another answer in the last
                         stage of the sequential schedule (the interfering later-stage copy is an
                         ordinary sample with ``interferes_with`` = the stage-0 id);
  ``rare_complex``       a rare surface template (each rare template is used by <= 2 samples)
                         with a long or multi-step output.

  Planted samples of different causes are disjoint; rates are shares of a task's train samples
  (fact-based causes apply to ``fact_qa`` only, ``forgetting`` to the tasks of stage 0).
  Held-out samples are never planted.

Real-facts variant: ``build_world(config, facts="real")`` builds the same tasks on a small table
of real-world facts (capitals, continents, languages; :mod:`epi_utils.data.world_real`) for a
real pretrained model such as SmolLM2; its ``pretrain_corpus`` states the real facts and
``missing_knowledge`` samples ask about fictional countries. Which facts a model already knows is
measured by :func:`epi_utils.lm.evaluate.probe_knowledge`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epi_utils.data.facts import Fact
from epi_utils.data.world_real import REAL_TEMPLATES, make_real_facts

PLANTED_CAUSES = ("missing_knowledge", "conflict", "inconsistency", "forgetting", "rare_complex")
TASKS = ("fact_qa", "arithmetic", "reversal", "sorting", "key_lookup", "format_conversion")
SPLITS = ("train", "heldout")
FACT_CAUSES = ("missing_knowledge", "conflict")
FACT_PROMPTS = ("question", "cloze")

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": ("red", "blue", "green", "yellow", "black", "white", "purple", "orange"),
    "city": ("paris", "rome", "oslo", "cairo", "lima", "tokyo", "delhi", "quito"),
    "food": ("rice", "bread", "soup", "cheese", "fish", "apples", "beans", "noodles"),
    "animal": ("cat", "dog", "horse", "parrot", "rabbit", "goat", "turtle", "owl"),
    "job": ("baker", "pilot", "doctor", "farmer", "singer", "painter", "lawyer", "miner"),
}
PRETRAIN_TEMPLATES = (
    "the {attr} of {ent} is {value} .",
    "{ent} has {value} as its {attr} .",
    "{ent} 's {attr} is {value} .",
    "people say that the {attr} of {ent} is {value} .",
)
RECALL_TEMPLATE = "the {attr} of {ent} is"   # cloze probe of the pretrained model
#: other phrasings of a fact question, from the corpus' own templates (words of the base vocabulary):
#: paraphrased inconsistency copies and the measured knowledge of the base model use them
PARAPHRASE_TEMPLATES = ("{ent} 's {attr} is", "people say that the {attr} of {ent} is")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
RARE_PREFIXES = ("please", "kindly", "now", "quickly", "carefully", "then", "next", "finally")
MAX_NUMBER = 200  # number tokens 0 .. MAX_NUMBER-1 are words of the vocabulary
_CONS = "bdfgklmnprstvz"
_VOWS = "aeiou"


@dataclass(frozen=True)
class WorldConfig:
    """Settings of the world; every field is validated (the error names field and allowed values)."""

    seed: int = 0                      # world seed (entities, facts, samples, planted causes)
    n_entities: int = 40               # entities; facts = n_entities x 5 attributes
    tasks: tuple[str, ...] = TASKS     # subset of TASKS, in schedule order
    n_train_per_task: int = 48         # train samples per task (planted included, interference excluded)
    n_heldout_per_task: int = 24       # held-out samples per task (never planted)
    pretrain_fact_fraction: float = 0.7  # share of facts stated in the pretraining corpus
    missing_knowledge_rate: float = 0.1  # share of fact_qa train samples about absent facts
    conflict_rate: float = 0.1         # share of fact_qa train samples contradicting the corpus
    inconsistency_rate: float = 0.1    # share of a task's train samples in duplicated-prompt pairs
    forgetting_rate: float = 0.1       # share of a stage-0 task's train samples overwritten later
    rare_complex_rate: float = 0.1     # share of a task's train samples with rare template + long output
    n_stages: int = 2                  # sequential schedule: tasks split into this many stages
    fact_prompt: str = "question"      # fact-QA prompt: "question" (QA form) | "cloze" (the corpus' recall
    #                                    form RECALL_TEMPLATE, so the base model's knowledge applies to it)
    paraphrase_share: float = 0.0      # share of fact_qa inconsistency pairs whose second copy asks the same
    #                                    fact in a paraphrased prompt (PARAPHRASE_TEMPLATES); 0 = exact copies

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
                rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"WorldConfig.{name} must be an integer in {rng}, got {v!r}")

        _int("seed", 0)
        _int("n_entities", 4, 2000)
        _int("n_train_per_task", 2)
        _int("n_heldout_per_task", 0)
        if isinstance(self.tasks, str) or not isinstance(self.tasks, (tuple, list)) or not self.tasks:
            raise ValueError(f"WorldConfig.tasks must be a non-empty tuple of task names from {TASKS}, got {self.tasks!r}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"WorldConfig.tasks: unknown task {t!r}; allowed values: {TASKS}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"WorldConfig.tasks must not repeat a task, got {self.tasks!r}")
        _int("n_stages", 1, len(self.tasks))
        if self.fact_prompt not in FACT_PROMPTS:
            raise ValueError(f"WorldConfig.fact_prompt must be one of {FACT_PROMPTS}, got {self.fact_prompt!r}")
        for name in ("pretrain_fact_fraction", "paraphrase_share", *[f"{c}_rate" for c in PLANTED_CAUSES]):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 <= float(v) <= 1.0):
                raise ValueError(f"WorldConfig.{name} must be a fraction in [0, 1], got {v!r}")
        if self.forgetting_rate > 0 and self.n_stages < 2:
            raise ValueError("WorldConfig.forgetting_rate > 0 needs n_stages >= 2 (a later stage must overwrite "
                             f"stage-0 samples); got n_stages={self.n_stages}")
        for task in self.tasks:
            total = sum(_cause_counts(self, task, stage0=True).values())
            if total > self.n_train_per_task:
                raise ValueError(f"WorldConfig: planted-cause rates for task {task!r} add up to more than all of "
                                 f"its {self.n_train_per_task} train samples; lower the *_rate fields")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        return d


def _cause_counts(config: WorldConfig, task: str, *, stage0: bool) -> dict[str, int]:
    """How many train samples of ``task`` carry each planted cause."""
    n = config.n_train_per_task
    counts = {c: 0 for c in PLANTED_CAUSES}
    if task == "fact_qa":
        counts["missing_knowledge"] = int(round(config.missing_knowledge_rate * n))
        counts["conflict"] = int(round(config.conflict_rate * n))
    counts["inconsistency"] = 2 * int(round(config.inconsistency_rate * n / 2))
    if stage0 and config.n_stages >= 2:
        counts["forgetting"] = int(round(config.forgetting_rate * n))
    counts["rare_complex"] = int(round(config.rare_complex_rate * n))
    return counts


@dataclass(frozen=True)
class Sample:
    """One SFT sample (see the module docstring for the planted causes)."""

    id: str
    task: str
    split: str
    prompt: str
    response: str
    stage: int
    planted_cause: str | None
    template_id: str
    fact_id: str | None = None
    pretrain_answer: str | None = None
    interferes_with: str | None = None   # for a later-stage copy: id of the stage-0 sample it overwrites
    true_response: str | None = None     # inconsistency pairs: the task's correct answer (the other copy's
    #                                      target is an alternative); None elsewhere

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class World:
    """Facts, pretraining corpus and SFT samples of one seed (built by :func:`build_world`)."""

    config: WorldConfig
    facts: list[Fact]
    pretrain_corpus: list[str]
    samples: list[Sample]
    kind: str = "synthetic"
    extra_vocabulary: tuple[str, ...] = field(default=())

    def split(self, split: str, *, task: str | None = None) -> list[Sample]:
        """Samples of ``split`` ("train" includes later-stage interference copies), optionally one task."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if task is not None and task not in self.config.tasks:
            raise ValueError(f"task must be one of {self.config.tasks}, got {task!r}")
        return [s for s in self.samples if s.split == split and (task is None or s.task == task)]

    def stage_tasks(self) -> list[tuple[str, ...]]:
        """Tasks of each stage of the sequential schedule (contiguous chunks of ``config.tasks``)."""
        chunks = np.array_split(np.arange(len(self.config.tasks)), self.config.n_stages)
        return [tuple(self.config.tasks[i] for i in c) for c in chunks]

    def stages(self) -> list[list[Sample]]:
        """Train samples per stage of the sequential schedule (interference copies in the last stage)."""
        out: list[list[Sample]] = [[] for _ in range(self.config.n_stages)]
        for s in self.samples:
            if s.split == "train":
                out[s.stage].append(s)
        return out

    def mixed(self) -> list[list[Sample]]:
        """One-stage (multi-task) schedule: all train samples except the interference copies, which
        only make sense in the sequential schedule."""
        return [[s for s in self.samples if s.split == "train" and s.interferes_with is None]]

    def fact(self, fact_id: str) -> Fact:
        for f in self.facts:
            if f.fact_id == fact_id:
                return f
        raise KeyError(f"unknown fact_id {fact_id!r}")

    def vocabulary(self) -> list[str]:
        """Every whitespace-separated word of the corpus, the samples and the task generators."""
        words: set[str] = set(_base_vocabulary()) | set(self.extra_vocabulary)
        for f in self.facts:
            words.update((f.entity, f.attribute, f.value))
        for line in self.pretrain_corpus:
            words.update(line.split())
        for s in self.samples:
            words.update(s.prompt.split())
            words.update(s.response.split())
        return sorted(words)


def _base_vocabulary() -> list[str]:
    words = [str(i) for i in range(MAX_NUMBER)] + list(LETTERS) + list(MONTHS) + list(RARE_PREFIXES)
    for attr, vals in ATTRIBUTES.items():
        words.append(attr)
        words.extend(vals)
    for t in PRETRAIN_TEMPLATES + (RECALL_TEMPLATE,):
        words.extend(w for w in t.split() if not w.startswith("{"))
    words += ("question", ":", "what", "is", "the", "of", "?", "are", "and", "compute", "plus", "minus",
              "times", "then", "reverse", "sort", "lookup", "in", "convert", "date", "to", "numeric",
              "dates", "/", ",", "step", "tell", "me", "about", "count", "letters", "months")
    return words


# ----------------------------------------------------------------------------- task generators
# Each generator returns (prompt, response, template_id, fact_id, pretrain_answer).

def _alt_number(rng: np.random.Generator, correct: int, lo: int, hi: int) -> str:
    choices = [v for v in range(lo, hi) if v != correct]
    return str(choices[int(rng.integers(len(choices)))])


def _gen_arithmetic(rng, rare: bool, rare_idx: int):
    if not rare:
        a, b = int(rng.integers(10)), int(rng.integers(10))
        if rng.random() < 0.5:
            return f"compute {a} plus {b}", str(a + b), "arithmetic/main"
        a, b = max(a, b), min(a, b)
        return f"compute {a} minus {b}", str(a - b), "arithmetic/main"
    a, b, c = (int(x) for x in rng.integers(1, 10, size=3))
    p = RARE_PREFIXES[rare_idx % len(RARE_PREFIXES)]
    return (f"{p} compute {a} plus {b} times {c} step by step",
            f"{b} times {c} is {b * c} then {a} plus {b * c} is {a + b * c}",
            f"arithmetic/rare{rare_idx % len(RARE_PREFIXES)}")


def _gen_reversal(rng, rare: bool, rare_idx: int):
    n = int(rng.integers(7, 10)) if rare else int(rng.integers(2, 5))
    seq = [LETTERS[i] for i in rng.integers(len(LETTERS), size=n)]
    out = " ".join(reversed(seq))
    if not rare:
        return f"reverse {' '.join(seq)}", out, "reversal/main"
    p = RARE_PREFIXES[rare_idx % len(RARE_PREFIXES)]
    return f"{p} reverse the letters {' '.join(seq)}", out, f"reversal/rare{rare_idx % len(RARE_PREFIXES)}"


def _gen_sorting(rng, rare: bool, rare_idx: int):
    n = int(rng.integers(7, 10)) if rare else int(rng.integers(2, 5))
    nums = [int(x) for x in rng.choice(30, size=n, replace=False)]
    out = " ".join(str(x) for x in sorted(nums))
    if not rare:
        return f"sort {' '.join(map(str, nums))}", out, "sorting/main"
    p = RARE_PREFIXES[rare_idx % len(RARE_PREFIXES)]
    return f"{p} sort the numbers {' '.join(map(str, nums))}", out, f"sorting/rare{rare_idx % len(RARE_PREFIXES)}"


def _gen_key_lookup(rng, rare: bool, rare_idx: int):
    n = int(rng.integers(6, 9)) if rare else int(rng.integers(3, 6))
    keys = [LETTERS[i] for i in rng.choice(len(LETTERS), size=n, replace=False)]
    vals = [int(x) for x in rng.integers(MAX_NUMBER // 2, size=n)]
    ctx = " ".join(f"{k} {v}" for k, v in zip(keys, vals))
    if not rare:
        q = int(rng.integers(n))
        return f"lookup {keys[q]} in {ctx}", str(vals[q]), "key_lookup/main"
    q1, q2 = (int(x) for x in rng.choice(n, size=2, replace=False))
    p = RARE_PREFIXES[rare_idx % len(RARE_PREFIXES)]
    return (f"{p} lookup {keys[q1]} and {keys[q2]} in {ctx}", f"{vals[q1]} and {vals[q2]}",
            f"key_lookup/rare{rare_idx % len(RARE_PREFIXES)}")


def _gen_format_conversion(rng, rare: bool, rare_idx: int):
    def one():
        d, m = int(rng.integers(1, 29)), int(rng.integers(12))
        return f"{d} {MONTHS[m]}", f"{d} / {m + 1}"
    if not rare:
        src, dst = one()
        return f"convert date {src} to numeric", dst, "format_conversion/main"
    parts = [one() for _ in range(3)]
    p = RARE_PREFIXES[rare_idx % len(RARE_PREFIXES)]
    return (f"{p} convert dates {' , '.join(s for s, _ in parts)} to numeric",
            " , ".join(d for _, d in parts), f"format_conversion/rare{rare_idx % len(RARE_PREFIXES)}")


_GENERATORS = {"arithmetic": _gen_arithmetic, "reversal": _gen_reversal, "sorting": _gen_sorting,
               "key_lookup": _gen_key_lookup, "format_conversion": _gen_format_conversion}


def _alternate_response(task: str, prompt: str, response: str, rng: np.random.Generator,
                        values: tuple[str, ...] | None = None) -> str:
    """A plausible but different response for the same prompt (for duplicates and interference)."""
    if task == "fact_qa":
        pool = [v for v in (values or ()) if v != response]
        return pool[int(rng.integers(len(pool)))]
    if task in ("arithmetic", "key_lookup") and response.isdigit():
        return _alt_number(rng, int(response), 0, 19 if task == "arithmetic" else MAX_NUMBER // 2)
    toks = response.split()
    if task in ("reversal", "sorting") and len(set(toks)) > 1:
        alt = list(reversed(toks))          # copy / descending order
        if alt != toks:
            return " ".join(alt)
    if task == "format_conversion":
        d, _, m = toks[0], toks[1], toks[2]
        return f"{m} / {d}" if m != d else f"{d} / {(int(m) % 12) + 1}"
    return " ".join(toks + toks[-1:])       # generic fallback: repeat the last word


# ----------------------------------------------------------------------------- building
def _entity_names(rng: np.random.Generator, n: int, reserved: set[str]) -> list[str]:
    names: list[str] = []
    seen = set(reserved)
    while len(names) < n:
        name = "".join(_CONS[rng.integers(len(_CONS))] + _VOWS[rng.integers(len(_VOWS))] for _ in range(2))
        name += _CONS[rng.integers(len(_CONS))]
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _make_facts(config: WorldConfig, rng: np.random.Generator) -> list[Fact]:
    entities = _entity_names(rng, config.n_entities, set(_base_vocabulary()))
    recs = [(e, a, vals[int(rng.integers(len(vals)))]) for e in entities for a, vals in ATTRIBUTES.items()]
    order = rng.permutation(len(recs))
    n_pre = int(round(config.pretrain_fact_fraction * len(recs)))
    in_pre = np.zeros(len(recs), dtype=bool)
    in_pre[order[:n_pre]] = True
    return [Fact(f"{e}/{a}", e, a, v, bool(in_pre[i])) for i, (e, a, v) in enumerate(recs)]


N_BACKGROUND = 120  # background sentences (counting, letter runs, month runs) in the corpus


def _background_sentences(rng: np.random.Generator, n: int) -> list[str]:
    """Sentences that use the task words (numbers, letters, months) without stating any task answer,
    so that the pretrained model knows these words exist (otherwise SFT starts from a huge loss)."""
    out = []
    for k in range(n):
        kind = k % 3
        if kind == 0:
            start = int(rng.integers(0, MAX_NUMBER - 6))
            out.append("count " + " ".join(str(start + i) for i in range(int(rng.integers(3, 7)))) + " .")
        elif kind == 1:
            start = int(rng.integers(0, len(LETTERS) - 6))
            out.append("letters " + " ".join(LETTERS[start:start + int(rng.integers(3, 7))]) + " .")
        else:
            start = int(rng.integers(0, len(MONTHS) - 3))
            out.append("months " + " ".join(MONTHS[start:start + 3]) + " .")
    return out


def _make_corpus(facts: list[Fact], rng: np.random.Generator) -> list[str]:
    lines = [t.format(attr=f.attribute, ent=f.entity, value=f.value)
             for f in facts if f.in_pretrain for t in PRETRAIN_TEMPLATES]
    lines += _background_sentences(rng, N_BACKGROUND)
    return [lines[i] for i in rng.permutation(len(lines))]


def fact_question(attribute: str, entity: str, *, form: str = "question") -> str:
    """The main fact-QA prompt: ``"question"`` form (default) or the corpus' ``"cloze"`` recall form."""
    if form == "cloze":
        return RECALL_TEMPLATE.format(attr=attribute, ent=entity)
    return f"question : what is the {attribute} of {entity} ?"


def paraphrase(attribute: str, entity: str, k: int = 0) -> str:
    """The ``k``-th (cyclic) other phrasing of the fact question (:data:`PARAPHRASE_TEMPLATES`)."""
    return PARAPHRASE_TEMPLATES[k % len(PARAPHRASE_TEMPLATES)].format(attr=attribute, ent=entity)


def _fact_qa_samples(config, facts, rng, values_of, *, n_train_counts, n_heldout, stage, rare_start=0):
    """Fact-QA train items (list of (cause, prompt, response, template, fact_id, pretrain_answer)) and heldout."""
    pre = [f for f in facts if f.in_pretrain]
    absent = [f for f in facts if not f.in_pretrain]
    pre = [pre[i] for i in rng.permutation(len(pre))]
    absent = [absent[i] for i in rng.permutation(len(absent))]
    n_plain = n_train_counts[None] + n_train_counts["inconsistency"] // 2 + n_train_counts["forgetting"]
    need_pre = n_plain + n_train_counts["conflict"] + n_train_counts["rare_complex"] + n_heldout
    if need_pre > len(pre) or n_train_counts["missing_knowledge"] > len(absent):
        raise ValueError(f"WorldConfig: not enough facts for fact_qa ({len(pre)} in pretraining, {len(absent)} absent; "
                         f"need {need_pre} and {n_train_counts['missing_knowledge']}); raise n_entities or "
                         "lower n_train_per_task/n_heldout_per_task")
    it = iter(pre)
    items = []
    for cause, k in (("plain", n_plain), ("conflict", n_train_counts["conflict"])):
        for _ in range(k):
            f = next(it)
            ans = f.value if cause == "plain" else _alternate_response("fact_qa", "", f.value, rng, values_of(f))
            items.append([cause, fact_question(f.attribute, f.entity, form=config.fact_prompt), ans, "fact_qa/main", f.fact_id, f.value])
    attrs = sorted({f.attribute for f in facts})
    for j in range(n_train_counts["rare_complex"]):
        f = next(it)
        other = attrs[(attrs.index(f.attribute) + 1) % len(attrs)]
        ov = next(g for g in facts if g.entity == f.entity and g.attribute == other).value
        k = (rare_start + j) % len(RARE_PREFIXES)
        items.append(["rare_complex", f"{RARE_PREFIXES[k]} tell me about {f.entity} : what are the {f.attribute} "
                      f"and the {other} of it ?", f"{f.value} and {ov}", f"fact_qa/rare{k}", f.fact_id, f.value])
    for f in absent[: n_train_counts["missing_knowledge"]]:
        items.append(["missing_knowledge", fact_question(f.attribute, f.entity, form=config.fact_prompt), f.value, "fact_qa/main", f.fact_id, None])
    heldout = [(fact_question(f.attribute, f.entity, form=config.fact_prompt), f.value, "fact_qa/main", f.fact_id, f.value)
               for f in (next(it) for _ in range(n_heldout))]
    return items, heldout


def build_world(config: WorldConfig | None = None, *, facts: str = "synthetic") -> World:
    """Build the world for ``config`` (deterministic for ``config.seed``).

    ``facts``: ``"synthetic"`` (made-up entities, for the ``tiny`` model) or ``"real"`` (real-world
    facts for a real pretrained model, :mod:`epi_utils.data.world_real`).
    """
    config = config if config is not None else WorldConfig()
    if not isinstance(config, WorldConfig):
        raise TypeError(f"config must be a WorldConfig, got {type(config).__name__}")
    if facts not in ("synthetic", "real"):
        raise ValueError(f"facts must be one of ('synthetic', 'real'), got {facts!r}")
    rng = np.random.default_rng(config.seed)
    if facts == "real":
        fact_list, values = make_real_facts(config, rng)
        corpus = _make_real_corpus(fact_list, rng)
    else:
        fact_list = _make_facts(config, rng)
        values = {a: v for a, v in ATTRIBUTES.items()}
        corpus = _make_corpus(fact_list, rng)
    samples = _build_samples(config, fact_list, values, rng)
    return World(config=config, facts=fact_list, pretrain_corpus=corpus, samples=samples, kind=facts)


def _make_real_corpus(facts: list[Fact], rng) -> list[str]:
    lines = [t.format(attr=f.attribute, ent=f.entity, value=f.value) for f in facts if f.in_pretrain
             for t in REAL_TEMPLATES]
    return [lines[i] for i in rng.permutation(len(lines))]


def _build_samples(config: WorldConfig, facts: list[Fact], values: dict, rng) -> list[Sample]:
    stage_of = {}
    for k, chunk in enumerate(np.array_split(np.arange(len(config.tasks)), config.n_stages)):
        for i in chunk:
            stage_of[config.tasks[int(i)]] = k
    last = config.n_stages - 1
    samples: list[Sample] = []
    interference: list[Sample] = []
    fact_by_id = {f.fact_id: f for f in facts}

    def values_of(f: Fact) -> tuple[str, ...]:
        return tuple(values[f.attribute])

    for task in config.tasks:
        stage = stage_of[task]
        counts = _cause_counts(config, task, stage0=(stage == 0))
        n_planted = sum(counts.values())
        n_plain = config.n_train_per_task - n_planted
        counts_plain = dict(counts)
        counts_plain[None] = n_plain
        if task == "fact_qa":
            items, heldout = _fact_qa_samples(config, facts, rng, values_of, n_train_counts=counts_plain,
                                              n_heldout=config.n_heldout_per_task, stage=stage)
        else:
            items, heldout = _task_items(task, config, counts_plain, rng)
        # items: [cause-ish, prompt, response, template, fact_id, pretrain_answer]; "plain" items become
        # inconsistency pairs, forgetting samples or ordinary samples
        plain = [it for it in items if it[0] == "plain"]
        planted = [it for it in items if it[0] != "plain"]
        n_pairs = counts["inconsistency"] // 2
        train: list[list] = []
        n_para = int(round(config.paraphrase_share * n_pairs)) if task == "fact_qa" else 0
        truth_of: dict[int, str] = {}
        for k, it in enumerate(plain[:n_pairs]):
            f = fact_by_id.get(it[4]) if it[4] else None
            alt = _alternate_response(task, it[1], it[2], rng, values_of(f) if f else None)
            prompt2 = paraphrase(f.attribute, f.entity, k) if (k < n_para and f is not None) else it[1]
            truth_of[len(train)] = truth_of[len(train) + 1] = it[2]
            train.append(["inconsistency", *it[1:]])
            train.append(["inconsistency", prompt2, alt, *it[3:]])
        for it in plain[n_pairs:n_pairs + counts["forgetting"]]:
            train.append(["forgetting", *it[1:]])
        for it in plain[n_pairs + counts["forgetting"]:]:
            train.append([None, *it[1:]])
        train.extend(planted)
        order = rng.permutation(len(train))
        for j, idx in enumerate(order):
            cause, prompt, resp, tmpl, fid, pans = train[int(idx)]
            s = Sample(id=f"{task}/train/{j:04d}", task=task, split="train", prompt=prompt, response=resp,
                       stage=stage, planted_cause=cause, template_id=tmpl, fact_id=fid,
                       pretrain_answer=pans if task == "fact_qa" else None, true_response=truth_of.get(int(idx)))
            samples.append(s)
            if cause == "forgetting":
                f = fact_by_id.get(fid) if fid else None
                alt = _alternate_response(task, prompt, resp, rng, values_of(f) if f else None)
                interference.append(Sample(id=f"{task}/interfere/{len(interference):04d}", task=task, split="train",
                                           prompt=prompt, response=alt, stage=last, planted_cause=None,
                                           template_id=tmpl, fact_id=fid,
                                           pretrain_answer=pans if task == "fact_qa" else None,
                                           interferes_with=s.id))
        for j, (prompt, resp, tmpl, fid, pans) in enumerate(heldout):
            samples.append(Sample(id=f"{task}/heldout/{j:04d}", task=task, split="heldout", prompt=prompt,
                                  response=resp, stage=stage, planted_cause=None, template_id=tmpl, fact_id=fid,
                                  pretrain_answer=pans if task == "fact_qa" else None))
    return samples + interference


def _task_items(task: str, config: WorldConfig, counts: dict, rng) -> tuple[list, list]:
    """Unique-prompt items of a non-fact task: train items (plain + rare_complex) and heldout tuples."""
    gen = _GENERATORS[task]
    n_plain = counts[None] + counts["inconsistency"] // 2 + counts["forgetting"]
    need = n_plain + config.n_heldout_per_task
    seen: set[str] = set()
    plain: list[tuple] = []
    tries = 0
    while len(plain) < need:
        tries += 1
        if tries > 50 * need + 1000:
            raise ValueError(f"WorldConfig: task {task!r} cannot produce {need} distinct prompts; lower "
                             "n_train_per_task or n_heldout_per_task")
        prompt, resp, tmpl = gen(rng, False, 0)
        if prompt not in seen:
            seen.add(prompt)
            plain.append((prompt, resp, tmpl))
    items = [["plain", p, r, t, None, None] for p, r, t in plain[:n_plain]]
    heldout = [(p, r, t, None, None) for p, r, t in plain[n_plain:]]
    for j in range(counts["rare_complex"]):
        prompt, resp, tmpl = gen(rng, True, j)
        items.append(["rare_complex", prompt, resp, tmpl, None, None])
    return items, heldout
