"""What a run of study 02 reads: the sample pool, the pretrained model, and each seed's splits and batches.

:func:`build_inputs` builds the pool and the model from a :class:`~epi_utils.isolation_study.config.Config`
(the full run); the rehearsal builds toy ones in the same layout (:mod:`epi_utils.isolation_study.rehearsal`)
and passes them to the same :func:`~epi_utils.isolation_study.study.run_study`. :func:`seed_data` cuts
one seed's train / validation / test samples and its probe and replay batches from the pool.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from epi_utils.isolation_study.config import MODEL_SIZES, Config
from epi_utils.lm.sft_format import encode_example, pad_batch, pad_id

INTERFERENCE = "~interference"


@dataclass
class Inputs:
    """``world``: the fixed sample pool (a :class:`~epi_utils.data.world.World`); ``model`` and
    ``tokenizer``: the base every run copies (never trained in place); ``pretrain``: facts about
    the base (``n_params``, pretraining recall of the tiny model)."""

    world: Any
    model: Any
    tokenizer: Any
    pretrain: dict


@dataclass
class SeedData:
    """Samples and batches of one seed (see :func:`seed_data`)."""

    seed: int
    stage_tasks: list[tuple[str, ...]]          # evaluated tasks of each stage
    stages: list[list]                          # training samples per stage (interference copies in stage 1)
    test: list                                  # held-out test samples (primary measure)
    val: list                                   # held-out validation samples (EWC's lambda)
    train_eval: list                            # train samples scored for memorisation (secondary)
    labels: list[str]                           # every batch label: tasks, then interference labels
    probe: dict[str, list[dict]]                # label -> probe batches from its train samples
    replay: dict[str, list[dict]]               # stage-0 task -> EPI replay batches (gradients only)
    replay_samples: list                        # matched-compute replay buffer (trained in stage 1)
    metric: dict[str, str]                      # task -> primary score (evaluate.METRICS)


def study_world(cfg: Config, *, data_files=None):
    """The fixed sample pool: the synthetic world (``world_seed``, clean tasks, ``n_train + n_val +
    n_test`` samples per task) or the Hugging Face tasks (:func:`epi_utils.isolation_study.hf_data.hf_world`;
    ``data_files``: task -> local JSONL file in the data set's layout)."""
    if cfg.data_source == "hf":
        from epi_utils.isolation_study.hf_data import hf_world

        return hf_world(list(cfg.hf_tasks), n_train=cfg.hf_n_train, n_heldout=cfg.hf_n_val + cfg.hf_n_test,
                        n_stages=2, seed=cfg.world_seed, max_response_words=cfg.hf_max_response_words,
                        data_files=data_files)
    from epi_utils.data.world import WorldConfig, build_world

    return build_world(WorldConfig(seed=cfg.world_seed, tasks=tuple(cfg.world_tasks),
                                   n_train_per_task=cfg.n_train_per_task,
                                   n_heldout_per_task=cfg.n_val_per_task + cfg.n_test_per_task,
                                   inconsistency_rate=0.0, rare_complex_rate=0.0, missing_knowledge_rate=0.0,
                                   conflict_rate=0.0, forgetting_rate=0.0, n_stages=2))


def load_base(cfg: Config, world):
    """``(model, tokenizer, pretrain meta)`` on ``cfg.torch_device``: the ``tiny`` GPT-2 of
    ``model_size`` pretrained once on the world's corpus (cached; ``pretrain_seed``), or any model
    :func:`epi_utils.lm.models.load_model` knows."""
    from epi_utils.lm import models

    device = str(cfg.torch_device)
    if cfg.model != "tiny":
        model, tok = models.load_model(cfg.model, world=world, device=device)
        return model, tok, {"model": cfg.model, "n_params": sum(p.numel() for p in model.parameters())}
    mc = models.TinyModelConfig(**MODEL_SIZES[cfg.model_size])
    pc = models.TinyPretrainConfig(epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr, seed=cfg.pretrain_seed)
    model, tok = models.load_model("tiny", world=world, device=device, pretrain=cfg.pretrain, progress=False,
                                   tiny_model=mc, tiny_pretrain=pc)
    meta = models.tiny_pretrain_meta(world, tiny_model=mc, tiny_pretrain=pc) if cfg.pretrain else {}
    meta = {k: v for k, v in meta.items() if k != "world"}
    meta["n_params"] = sum(p.numel() for p in model.parameters())
    return model, tok, meta


def build_inputs(cfg: Config, *, data_files=None) -> Inputs:
    """The sample pool of :func:`study_world` and the base model of :func:`load_base` (in this
    order: the global RNG the caller seeded initialises a model that is not pretrained)."""
    world = study_world(cfg, data_files=data_files)
    model, tok, meta = load_base(cfg, world)
    return Inputs(world=world, model=model, tokenizer=tok, pretrain=meta)


def batches_for(tokenizer, samples: Sequence, *, batch_size: int, n_batches: int, seed: int) -> list[dict]:
    """``n_batches`` padded batches (``input_ids``, ``attention_mask``, ``labels`` with -100 on the
    prompt) of samples drawn without replacement with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(samples))[: batch_size * n_batches]
    out = []
    for k in range(0, len(idx), batch_size):
        enc = [encode_example(tokenizer, samples[i].prompt, samples[i].response) for i in idx[k:k + batch_size]]
        out.append(pad_batch(enc, pad_token_id=pad_id(tokenizer)))
    return out


def _interference_copies(samples: Sequence, *, rate: float, rng) -> list:
    """Copies of ``round(rate * n)`` samples with another answer (``world._alternate_response``),
    labelled ``<task>~interference``."""
    from epi_utils.data.world import ATTRIBUTES, _alternate_response

    n = int(round(rate * len(samples)))
    out = []
    for j, i in enumerate(rng.permutation(len(samples))[:n]):
        s = samples[int(i)]
        values = ATTRIBUTES.get(s.fact_id.split("/")[-1]) if s.fact_id else None
        alt = _alternate_response(s.task, s.prompt, s.response, rng, values=values)
        out.append(dataclasses.replace(s, id=f"{s.task}/interfere/{j:04d}", task=s.task + INTERFERENCE,
                                       response=alt, stage=1, interferes_with=s.id))
    return out


def seed_data(world, tokenizer, cfg: Config, seed: int) -> SeedData:
    """Per seed: each task's pool (train + held-out samples of the world) is permuted with
    ``default_rng([seed, k])`` and cut into ``n_train`` train, ``n_val`` validation and ``n_test``
    test samples (all clean, so the cut is exchangeable); probe / replay batches and the replay
    buffer are drawn from the train samples."""
    from epi_utils.isolation_study.hf_data import HF_METRICS

    stage_tasks = [tuple(t) for t in world.stage_tasks()]
    hf = cfg.data_source == "hf"
    n_tr = cfg.hf_n_train if hf else cfg.n_train_per_task
    n_va = cfg.hf_n_val if hf else cfg.n_val_per_task
    train, val, test = {}, {}, {}
    for k, task in enumerate(world.config.tasks):
        pool = world.split("train", task=task) + world.split("heldout", task=task)
        perm = np.random.default_rng([seed, k]).permutation(len(pool))
        p = [pool[int(i)] for i in perm]
        n_tr_k = min(n_tr, len(p) - 2) if hf else n_tr
        n_va_k = min(n_va, max(0, len(p) - n_tr_k - 1)) if hf else n_va
        train[task], val[task], test[task] = p[:n_tr_k], p[n_tr_k:n_tr_k + n_va_k], p[n_tr_k + n_va_k:]
    stages = [[s for t in tasks for s in train[t]] for tasks in stage_tasks]
    rng = np.random.default_rng([seed, 999])
    copies = _interference_copies(stages[0], rate=cfg.interference_rate, rng=rng) if cfg.interference_rate else []
    stages[-1] = stages[-1] + copies
    labels = list(world.config.tasks) + sorted({c.task for c in copies})
    by_label = {lab: [s for st in stages for s in st if s.task == lab] for lab in labels}
    probe = {lab: batches_for(tokenizer, v, batch_size=cfg.batch_size, n_batches=cfg.probe_batches, seed=1000 + seed)
             for lab, v in by_label.items()}
    replay = {t: batches_for(tokenizer, train[t], batch_size=cfg.batch_size, n_batches=cfg.replay_batches,
                             seed=2000 + seed) for t in stage_tasks[0]}
    buf = []
    for t in stage_tasks[0]:
        idx = np.random.default_rng([seed, 3000]).permutation(len(train[t]))[:cfg.replay_samples]
        buf += [train[t][int(i)] for i in idx]
    n_ev = cfg.n_train_eval_per_task
    return SeedData(seed=seed, stage_tasks=stage_tasks, stages=stages,
                    test=[s for t in world.config.tasks for s in test[t]],
                    val=[s for t in world.config.tasks for s in val[t]],
                    train_eval=[s for t in world.config.tasks for s in train[t][:n_ev]], labels=labels,
                    probe=probe, replay=replay, replay_samples=buf,
                    metric={t: HF_METRICS.get(t, "exact") if hf else "exact" for t in world.config.tasks})
