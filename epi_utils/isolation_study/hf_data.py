"""Real SFT data sets for study 02's ``gpu`` profile (GSM8K, CodeAlpaca, Alpaca) via ``datasets``.

:func:`hf_world` builds a :class:`epi_utils.data.world.World` without facts or corpus (study 02 uses
only ``config.tasks``, ``config.n_stages``, ``split``, ``stages`` and ``stage_tasks``) from Hugging
Face data sets, one task per data set, as :class:`~epi_utils.data.world.Sample` records. Needs the
data sets in the local HF cache or network access to the hub, or local JSONL files in the data
set's field layout (``data_files``; the GPU rehearsal writes 8 rows per data set with
:func:`epi_utils.workbench.rehearsal.write_local_samples`). Not exercised on the real data sets on
the development machine (no hub access there).

Targets: GSM8K keeps its reasoning and the ``#### answer`` line (scored on the final answer,
:func:`epi_utils.lm.evaluate.gsm8k_final_answer`); the free-form tasks are truncated to
``max_response_words`` words and scored by ROUGE-L (:data:`HF_METRICS`), with exact match beside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from epi_utils.data.world import Sample, World

# task name -> (dataset id, config, split, prompt builder, response builder)
HF_TASKS = {
    "gsm8k": ("openai/gsm8k", "main", "train", lambda r: r["question"], lambda r: r["answer"].strip()),
    "codealpaca": ("sahil2801/CodeAlpaca-20k", None, "train",
                   lambda r: (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")), lambda r: r["output"]),
    "alpaca": ("tatsu-lab/alpaca", None, "train",
               lambda r: (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")), lambda r: r["output"]),
}
#: primary score of each task (one of :data:`epi_utils.lm.evaluate.METRICS`); exact match is kept beside.
HF_METRICS = {"gsm8k": "gsm8k", "codealpaca": "rouge_l", "alpaca": "rouge_l"}
#: tasks whose reasoning must stay whole in the target (never truncated)
KEEP_WHOLE = ("gsm8k",)


@dataclass(frozen=True)
class HFWorldConfig:
    tasks: tuple[str, ...]
    n_stages: int
    seed: int


def _load(task: str, data_files: Mapping[str, str] | None):
    from datasets import load_dataset

    ds_id, conf, split, _, _ = HF_TASKS[task]
    if data_files is not None:
        if task not in data_files:
            raise ValueError(f"data_files has no file for task {task!r}; it names {sorted(data_files)}")
        return load_dataset("json", data_files=str(data_files[task]), split="train")
    return load_dataset(ds_id, conf, split=split) if conf else load_dataset(ds_id, split=split)


def hf_world(tasks: Sequence[str], *, n_train: int = 2000, n_heldout: int = 200, n_stages: int = 2,
             seed: int = 0, max_response_words: int = 256, data_files: Mapping[str, str] | None = None) -> World:
    """Load ``tasks`` (keys of :data:`HF_TASKS`) and sample ``n_train`` + ``n_heldout`` examples per
    task with ``numpy.random.default_rng(seed)`` (fewer when the data set is smaller: the held-out
    share is kept, at least one of each). ``data_files``: task -> local JSONL file instead of the hub."""
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
        _, _, _, prompt_of, resp_of = HF_TASKS[task]
        ds = _load(task, data_files)
        n_tr, n_ho = n_train, n_heldout
        if n_tr + n_ho > len(ds):  # a small local file (rehearsal): keep both splits non-empty
            n_ho = max(1, round(len(ds) * n_heldout / (n_train + n_heldout)))
            n_tr = max(1, len(ds) - n_ho)
        idx = rng.permutation(len(ds))[: n_tr + n_ho]
        for j, i in enumerate(idx):
            row = ds[int(i)]
            resp = str(resp_of(row))
            if task not in KEEP_WHOLE:
                resp = " ".join(resp.split()[:max_response_words])
            sp = "train" if j < n_tr else "heldout"
            samples.append(Sample(id=f"{task}/{sp}/{j:05d}", task=task, split=sp, prompt=str(prompt_of(row)),
                                  response=resp, stage=stage_of[task], planted_cause=None, template_id=task))
    # A World with no facts or corpus: split/mixed/stages/stage_tasks only read config.tasks and n_stages.
    return World(config=HFWorldConfig(tasks=tuple(tasks), n_stages=n_stages, seed=seed), facts=[],
                 pretrain_corpus=[], samples=samples, kind="hf")
