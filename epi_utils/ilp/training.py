"""Inputs and training of one world of study 03: the world, the base model, the stage schedule with
replay and knowledge mix, sequential SFT to convergence with per-sample dynamics, the final evaluation.

**Convergence** (issue 28: no planted label decides how long training runs). By default
(``converge_on = "plateau"``) a stage stops when the share of *all* its own samples reproduced
exactly, checked every ``eval_every`` steps, has not risen by more than ``plateau_min_delta`` for
``plateau_patience`` checks (:class:`Plateau`), or at ``max_epochs``; the stage records whether the
plateau stopped it. ``converge_on = "clean"`` (the earlier design, kept for comparison) reads the
generator's plan: it stops when ``converge_share`` of the stage's *clean* samples (no planted cause)
are reproduced; with it, ``converge_share = 0`` trains ``max_epochs``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.data.world import RECALL_TEMPLATE, Sample, WorldConfig, build_world
from epi_utils.ilp import signals
from epi_utils.ilp.config import Config
from epi_utils.ilp.records import StageRun


def make_world(cfg: Config, seed: int):
    """The world of ``seed``: synthetic (cloze fact prompts, no planted overwrites: forgetting is
    measured) for ``tiny``, real facts otherwise."""
    real = not cfg.tiny_backend
    wc = WorldConfig(seed=seed, n_entities=cfg.n_entities, tasks=cfg.tasks, n_train_per_task=cfg.n_train_per_task,
                     n_heldout_per_task=cfg.n_heldout_per_task, pretrain_fact_fraction=cfg.pretrain_fact_fraction,
                     missing_knowledge_rate=cfg.missing_knowledge_rate, conflict_rate=cfg.conflict_rate,
                     inconsistency_rate=cfg.inconsistency_rate, forgetting_rate=0.0,
                     rare_complex_rate=cfg.rare_complex_rate, n_stages=cfg.n_stages,
                     fact_prompt="question" if real else "cloze", paraphrase_share=cfg.paraphrase_share)
    return build_world(wc, facts="real" if real else "synthetic")


def load_base(cfg: Config, world, seed: int, *, recall: bool = True):
    """``(model, tokenizer, recall)``: the pre-SFT model. ``tiny``: pretrained on the world's corpus
    with pretraining seed ``seed`` (cached), with its fact recall (``{}`` when ``recall`` is False);
    rehearsal: a random-initialised model of the backend's family over the world's word tokenizer;
    else the named real model."""
    import torch

    from epi_utils.lm.models import TINY_PRETRAIN, build_word_tokenizer, fact_recall, load_model
    from epi_utils.workbench import runs

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = str(runs.resolve_device(cfg.device))
    if cfg.rehearse:
        from transformers import AutoModelForCausalLM

        from epi_utils.workbench.rehearsal import tiny_model_config
        tok = build_word_tokenizer(world.vocabulary())
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_model_config(cfg.backend, vocab_size=len(tok)))
        return model.to(device).eval(), tok, {}
    if cfg.tiny_backend:
        pre = dataclasses.replace(TINY_PRETRAIN, epochs=cfg.pretrain_epochs)
        model, tok = load_model("tiny", world=world, device=device, tiny_pretrain=pre, pretrain_seed=seed,
                                progress=False)
        if not recall:
            return model, tok, {}
        return model, tok, {"corpus_facts": fact_recall(model, tok, world, in_pretrain=True),
                            "absent_facts": fact_recall(model, tok, world, in_pretrain=False)}
    model, tok = load_model(cfg.backend, world=world, device=device)
    return model, tok, {}


def schedule(world, *, replay: float, rng: np.random.Generator) -> list[list]:
    """Stage k trains its own samples plus a random share ``replay`` of the earlier stages' samples,
    except those whose prompt a later stage retrains with another target (visible in the data: the
    later copy supersedes them). Replayed samples keep their id."""
    if not 0.0 <= replay <= 1.0:
        raise ValueError(f"replay must be in [0, 1], got {replay}")
    base = world.stages()
    later: dict[str, list] = {}
    for k, st in enumerate(base):
        for s in st:
            later.setdefault(signals.normalize_text(s.prompt), []).append((k, s.response))
    out = []
    for k, st in enumerate(base):
        earlier = [s for j in range(k) for s in base[j]
                   if not any(kk > s.stage and r != s.response for kk, r in later[signals.normalize_text(s.prompt)])]
        n = int(round(replay * len(earlier)))
        pick = sorted(rng.choice(len(earlier), size=n, replace=False).tolist()) if n else []
        out.append(list(st) + [earlier[i] for i in pick])
    return out


CORPUS_PREFIX = "corpus/"


def knowledge_mix(world, *, share: float, rng: np.random.Generator) -> list:
    """Pretraining data mixed into every SFT stage: a random ``share`` of the facts the corpus
    states, in the corpus' cloze form (prompt ``"the {attr} of {ent} is"``, response = the corpus
    value), ids ``"corpus/..."``. Mixing pretraining data into SFT is the usual way to keep the base
    model's knowledge; it also keeps that knowledge competing with an SFT target that contradicts it
    (a conflict). These rows are pretraining data, not SFT samples: they are neither diagnosed nor
    read by any signal."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"knowledge_mix must be in [0, 1], got {share}")
    facts = [f for f in world.facts if f.in_pretrain]
    n = int(round(share * len(facts)))
    pick = sorted(rng.choice(len(facts), size=n, replace=False).tolist()) if n else []
    return [Sample(id=f"{CORPUS_PREFIX}{i:04d}", task="corpus", split="train", stage=0, planted_cause=None,
                   prompt=RECALL_TEMPLATE.format(attr=facts[i].attribute, ent=facts[i].entity),
                   response=facts[i].value, template_id="corpus") for i in pick]


# --------------------------------------------------------------------------- SFT to convergence
CONVERGENCE_RULES = ("clean", "plateau")


def convergence_ids(data: Sequence, *, stage: int, own_stage: dict, rule: str) -> list[str]:
    """The samples whose exact match decides when stage ``stage`` stops.

    ``"clean"`` (the study's design): the stage's own samples with no planted cause -- it reads the
    generator's plan. ``"plateau"``: all of the stage's own samples (what a user has; no generator
    field is read)."""
    if rule not in CONVERGENCE_RULES:
        raise ValueError(f"convergence rule must be one of {CONVERGENCE_RULES}, got {rule!r}")
    own = [s for s in data if own_stage.get(s.id) == stage]
    return [s.id for s in own if s.planted_cause is None] if rule == "clean" else [s.id for s in own]


@dataclasses.dataclass
class Plateau:
    """Stop when the watched value has not risen by more than ``min_delta`` above its best for
    ``patience`` consecutive checks (Keras' ``EarlyStopping(patience, min_delta)`` on a metric to
    maximise). :meth:`update` takes the next value and says whether to stop; NaN never improves."""

    patience: int
    min_delta: float = 0.0
    best: float = float("-inf")
    waited: int = 0

    def __post_init__(self):
        if self.patience < 1 or self.min_delta < 0:
            raise ValueError(f"Plateau needs patience >= 1 and min_delta >= 0, got {self.patience}, {self.min_delta}")

    def update(self, value: float) -> bool:
        if np.isfinite(value) and value - self.min_delta > self.best:
            self.best, self.waited = float(value), 0
            return False
        self.waited += 1
        return self.waited >= self.patience


def _convergence_hook(ids: Sequence[str], share: float, seen: list, *, plateau: Plateau | None = None):
    """The engine hook that stops a stage: at ``share`` of ``ids`` reproduced (``share > 0``), or,
    with ``plateau``, when that share stops rising (checked from the first evaluation after step 0)."""
    from epi_utils.lm.train import TrainHook

    watch = set(ids)

    class Hook(TrainHook):
        converged = False

        def on_evaluate(self, state, records):
            got = [r["exact_match"] for r in records if r["sample_id"] in watch]
            value = float(np.mean(got)) if got else float("nan")
            seen.append((state.step, state.epoch, value))
            if plateau is not None:
                if state.step > 0 and plateau.update(value):
                    self.converged = state.should_stop = True
            elif share > 0 and state.step > 0 and got and value >= share:
                self.converged = state.should_stop = True
    return Hook()


def train_to_convergence(cfg: Config, model, tokenizer, stages: Sequence[Sequence], *, own_stage: dict,
                         workdir: Path, seed: int) -> tuple[pd.DataFrame, list[StageRun]]:
    """Train ``stages`` in order, each until convergence (module docstring); returns the dynamics
    records (stage = the sample's own stage, train_stage = the stage being trained, global steps)
    and one :class:`StageRun` per stage."""
    from epi_utils.lm.train import TrainConfig, train_sft

    frames, runs_out, offset = [], [], 0
    for k, data in enumerate(stages):
        watch = convergence_ids(data, stage=k, own_stage=own_stage, rule=cfg.converge_on)
        seen: list = []
        path = workdir / f"dynamics_seed{seed}_stage{k}.jsonl"
        # evaluation points on the SFT samples only (the knowledge-mix rows train but are never read:
        # ~40% of each evaluation), with the greedy budget of the whole stage, so the records are the ones
        # an evaluation of every row gives for them; a later stage's start is not evaluated (its records
        # were dropped below and the convergence rules read no check at step 0)
        tc = TrainConfig(lr=cfg.sft_lr, batch_size=cfg.sft_batch_size, epochs=cfg.max_epochs,
                         eval_every=cfg.eval_every, eval_at_start=k == 0, schedule="constant", warmup_ratio=0.0,
                         seed=seed + 1000 * k)
        plateau = Plateau(cfg.plateau_patience, cfg.plateau_min_delta) if cfg.converge_on == "plateau" else None
        stop = _convergence_hook(watch, cfg.converge_share, seen, plateau=plateau)
        train_sft(model, tokenizer, [list(data)], config=tc, hooks=[stop], dynamics_path=path,
                  dynamics_samples=[s for s in data if not s.id.startswith(CORPUS_PREFIX)], progress=False)
        converged = stop.converged
        model.eval()
        dyn = signals.read_dynamics(path).copy()
        dyn["stage"] = dyn["sample_id"].map(own_stage).astype(int)
        dyn["train_stage"] = k
        dyn = dyn[dyn["step"] > 0] if k > 0 else dyn
        dyn["step"] = dyn["step"] + offset
        steps, epoch, share = seen[-1]
        runs_out.append(StageRun(stage=k, steps=int(steps), epochs=float(epoch), clean_learned_share=float(share),
                                 converged=converged or (plateau is None and cfg.converge_share > 0
                                                         and share >= cfg.converge_share)))
        offset += int(steps)
        frames.append(dyn)
    return pd.concat(frames, ignore_index=True), runs_out


def final_records(model, tokenizer, samples: Sequence, *, step: int, train_stage: int, own_stage: dict):
    """Exact match and teacher-forced loss of every training sample after the last stage, as
    dynamics records (the final evaluation point of samples not trained in the last stage)."""
    from epi_utils.lm.evaluate import exact_match, response_stats

    em = exact_match(model, tokenizer, samples)
    st = response_stats(model, tokenizer, samples)
    rec = pd.DataFrame([{"sample_id": s.id, "task": s.task, "stage": own_stage[s.id], "train_stage": train_stage,
                         "step": step, "epoch": 0.0, "loss": r["loss"], "mean_token_prob": r["mean_token_prob"],
                         "exact_match": int(c)} for s, r, c in zip(samples, st, em)])
    return pd.Series(em, index=[s.id for s in samples]), rec


