"""Real SFT data sets for study 02's ``gpu`` profile (GSM8K, CodeAlpaca, Alpaca) via ``datasets``.

:func:`hf_world` builds a :class:`epi_utils.data.world.World` without facts or corpus (study 02 uses
only ``config.tasks``, ``config.n_stages``, ``split``, ``mixed``, ``stages`` and ``stage_tasks``) from
Hugging Face data sets, one task per data set, as :class:`~epi_utils.data.world.Sample` records.
Needs the data sets in the local HF cache or network access to the hub; it was NOT exercised
on the development machine (no hub access there). Responses are truncated to ``max_response_words``
words so that greedy exact match stays meaningful (GSM8K keeps only the final answer after
``####``, as is usual for its exact-match accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from epi_utils.data.world import Sample, World

# task name -> (dataset id, config, split, prompt builder, response builder)
HF_TASKS = {
    "gsm8k": ("openai/gsm8k", "main", "train",
              lambda r: r["question"], lambda r: r["answer"].split("####")[-1].strip()),
    "codealpaca": ("sahil2801/CodeAlpaca-20k", None, "train",
                   lambda r: (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")), lambda r: r["output"]),
    "alpaca": ("tatsu-lab/alpaca", None, "train",
               lambda r: (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")), lambda r: r["output"]),
}


@dataclass(frozen=True)
class HFWorldConfig:
    tasks: tuple[str, ...]
    n_stages: int
    seed: int


def hf_world(tasks: Sequence[str], *, n_train: int = 2000, n_heldout: int = 200, n_stages: int = 2,
             seed: int = 0, max_response_words: int = 256) -> World:
    """Load ``tasks`` (keys of :data:`HF_TASKS`) with ``datasets.load_dataset`` and sample
    ``n_train`` + ``n_heldout`` examples per task with ``numpy.random.default_rng(seed)``."""
    from datasets import load_dataset

    bad = [t for t in tasks if t not in HF_TASKS]
    if bad:
        raise ValueError(f"unknown HF tasks {bad}; allowed values: {tuple(HF_TASKS)}")
    if not 1 <= n_stages <= len(tasks):
        raise ValueError(f"n_stages must be in [1, {len(tasks)}], got {n_stages}")
    rng = np.random.default_rng(seed)
    stage_of = {t: k for k, chunk in enumerate(np.array_split(np.arange(len(tasks)), n_stages)) for t in
                (tasks[i] for i in chunk)}
    samples: list[Sample] = []
    for task in tasks:
        ds_id, conf, split, prompt_of, resp_of = HF_TASKS[task]
        ds = load_dataset(ds_id, conf, split=split) if conf else load_dataset(ds_id, split=split)
        idx = rng.permutation(len(ds))[: n_train + n_heldout]
        for j, i in enumerate(idx):
            row = ds[int(i)]
            resp = " ".join(str(resp_of(row)).split()[:max_response_words])
            sp = "train" if j < n_train else "heldout"
            samples.append(Sample(id=f"{task}/{sp}/{j:05d}", task=task, split=sp, prompt=str(prompt_of(row)),
                                  response=resp, stage=stage_of[task], planted_cause=None, template_id=task))
    # A World with no facts or corpus: split/mixed/stages/stage_tasks only read config.tasks and n_stages.
    return World(config=HFWorldConfig(tasks=tuple(tasks), n_stages=n_stages, seed=seed), facts=[],
                 pretrain_corpus=[], samples=samples, kind="hf")
