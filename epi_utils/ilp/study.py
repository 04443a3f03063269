"""The ILP study the notebook calls, one seed at a time: world -> base model -> knowledge probe ->
sequential SFT to convergence with per-sample dynamics -> signals -> diagnosis -> truth ->
mitigations against compute-matched controls.

A seed changes everything that can change: the world (entities, facts, which facts the corpus
states, the samples and their planted causes), the tiny model's pretraining (initialisation and
batch order), the replay draw and the SFT batch order.

**Convergence.** Each stage trains until at least ``converge_share`` of its own *clean* samples
(no planted cause: the learnable part of the data) are reproduced exactly, checked every
``eval_every`` steps, or ``max_epochs``; the stage records whether it converged. A user without
planted truth would stop on held-out accuracy; here the criterion is part of the experimental
design, so that what stays unlearned is not under-training. ``converge_share = 0`` trains
``max_epochs`` (the real-facts run, where nothing is planted).

**Truth** (for validation only; the diagnosis never reads it), per unlearned sample, first match:
planted ``inconsistency``; planted ``conflict`` / ``missing_knowledge``; *measured* forgetting
(a sample of an earlier stage, reproduced at the end of its own stage and not at the end of
training); planted ``rare_complex``; otherwise ``none``. Forgetting comes from the dynamics, not
from the plan: with replay < 1 a stage-0 sample may or may not be lost.
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import diagnosis, probe, signals
from epi_utils.ilp.config import IlpConfig
from epi_utils.ilp.diagnosis import CAUSES, NO_CAUSE

#: fields of the world's samples that only the generator knows (scrambled by the leak test)
GENERATOR_FIELDS = ("planted_cause", "template_id", "fact_id", "pretrain_answer", "interferes_with")
#: causes whose signal restates how they are planted / measured, and causes the diagnosis infers
CLOSE_TO_RULE = ("inconsistency", "forgetting")
INFERRED = ("missing_knowledge", "conflict", "rare_complex")


@dataclass
class StageRun:
    """One stage of the sequential SFT: how long it trained and whether it converged."""
    stage: int
    steps: int
    epochs: float
    clean_learned_share: float
    converged: bool


@dataclass
class RecoveryRecord:
    """One arm of one mitigation on one seed: share of the diagnosed samples reproduced afterwards."""
    seed: int
    cause: str
    arm: str            # "fix" | "control"
    n_targets: int
    recovery_rate: float
    heldout_after: float


@dataclass
class SeedRecord:
    """Everything one seed produced (tables, no printing)."""
    seed: int
    table: pd.DataFrame                    # per training sample: fields, signals, learned, truth, diagnosis
    stages: list[StageRun]
    heldout_accuracy: float
    base_recall: dict[str, float]
    recovery: list[RecoveryRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- world and base model
def make_world(cfg: IlpConfig, seed: int):
    """The world of ``seed``: synthetic (cloze fact prompts, no planted overwrites: forgetting is
    measured) for ``tiny``, real facts otherwise."""
    from epi_utils.data.world import WorldConfig, build_world

    real = not cfg.tiny_backend
    wc = WorldConfig(seed=seed, n_entities=cfg.n_entities, tasks=cfg.tasks, n_train_per_task=cfg.n_train_per_task,
                     n_heldout_per_task=cfg.n_heldout_per_task, pretrain_fact_fraction=cfg.pretrain_fact_fraction,
                     missing_knowledge_rate=cfg.missing_knowledge_rate, conflict_rate=cfg.conflict_rate,
                     inconsistency_rate=cfg.inconsistency_rate, forgetting_rate=0.0,
                     rare_complex_rate=cfg.rare_complex_rate, n_stages=cfg.n_stages,
                     fact_prompt="question" if real else "cloze")
    return build_world(wc, facts="real" if real else "synthetic")


def load_base(cfg: IlpConfig, world, seed: int):
    """``(model, tokenizer, recall)``: the pre-SFT model. ``tiny``: pretrained on the world's corpus
    with pretraining seed ``seed`` (cached); rehearsal: a random-initialised model of the backend's
    family over the world's word tokenizer; else the named real model."""
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
        recall = {"corpus_facts": fact_recall(model, tok, world, in_pretrain=True),
                  "absent_facts": fact_recall(model, tok, world, in_pretrain=False)}
        return model, tok, recall
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
    from epi_utils.data.world import RECALL_TEMPLATE, Sample

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"knowledge_mix must be in [0, 1], got {share}")
    facts = [f for f in world.facts if f.in_pretrain]
    n = int(round(share * len(facts)))
    pick = sorted(rng.choice(len(facts), size=n, replace=False).tolist()) if n else []
    return [Sample(id=f"{CORPUS_PREFIX}{i:04d}", task="corpus", split="train", stage=0, planted_cause=None,
                   prompt=RECALL_TEMPLATE.format(attr=facts[i].attribute, ent=facts[i].entity),
                   response=facts[i].value, template_id="corpus") for i in pick]


# --------------------------------------------------------------------------- SFT to convergence
def _convergence_hook(ids: Sequence[str], share: float, seen: list):
    from epi_utils.lm.train import TrainHook

    watch = set(ids)

    class Hook(TrainHook):
        converged = False

        def on_evaluate(self, state, records):
            got = [r["exact_match"] for r in records if r["sample_id"] in watch]
            value = float(np.mean(got)) if got else float("nan")
            seen.append((state.step, state.epoch, value))
            if share > 0 and state.step > 0 and got and value >= share:
                self.converged = state.should_stop = True
    return Hook()


def train_to_convergence(cfg: IlpConfig, model, tokenizer, stages: Sequence[Sequence], *, own_stage: dict,
                         workdir: Path, seed: int) -> tuple[pd.DataFrame, list[StageRun]]:
    """Train ``stages`` in order, each until convergence (module docstring); returns the dynamics
    records (stage = the sample's own stage, train_stage = the stage being trained, global steps)
    and one :class:`StageRun` per stage."""
    from epi_utils.lm.train import TrainConfig, train_sft

    frames, runs_out, offset = [], [], 0
    for k, data in enumerate(stages):
        clean = [s.id for s in data if own_stage.get(s.id) == k and s.planted_cause is None]
        seen: list = []
        path = workdir / f"dynamics_seed{seed}_stage{k}.jsonl"
        tc = TrainConfig(lr=cfg.sft_lr, batch_size=cfg.sft_batch_size, epochs=cfg.max_epochs,
                         eval_every=cfg.eval_every, schedule="constant", warmup_ratio=0.0, seed=seed + 1000 * k)
        stop = _convergence_hook(clean, cfg.converge_share, seen)
        train_sft(model, tokenizer, [list(data)], config=tc, hooks=[stop], dynamics_path=path, progress=False)
        converged = stop.converged
        model.eval()
        dyn = signals.read_dynamics(path)
        dyn = dyn[~dyn["sample_id"].astype(str).str.startswith(CORPUS_PREFIX)].copy()
        dyn["stage"] = dyn["sample_id"].map(own_stage).astype(int)
        dyn["train_stage"] = k
        dyn = dyn[dyn["step"] > 0] if k > 0 else dyn
        dyn["step"] = dyn["step"] + offset
        steps, epoch, share = seen[-1]
        runs_out.append(StageRun(stage=k, steps=int(steps), epochs=float(epoch), clean_learned_share=float(share),
                                 converged=converged or (cfg.converge_share > 0 and share >= cfg.converge_share)))
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


# --------------------------------------------------------------------------- truth
def truth_labels(table: pd.DataFrame) -> pd.Series:
    """Validation truth per row (module docstring); needs ``planted_cause``, ``stage``, ``learned``
    and the dynamics columns. Learned rows get ``"learned"``."""
    planted = table["planted_cause"].fillna(NO_CAUSE).astype(str)
    last = int(table["stage"].max())
    forgot = (table["stage"] < last) & (table["dyn_learned_in_stage"].fillna(0) >= 0.5) & ~table["learned"].astype(bool)
    out = pd.Series(NO_CAUSE, index=table.index, dtype=object)
    out[planted == "rare_complex"] = "rare_complex"
    out[forgot | (planted == "forgetting")] = "forgetting"
    for c in ("missing_knowledge", "conflict", "inconsistency"):
        out[planted == c] = c
    out[table["learned"].astype(bool)] = "learned"
    return out


# --------------------------------------------------------------------------- one seed
def signal_table_for(cfg: IlpConfig, train: Sequence, *, learned: pd.Series, dynamics: pd.DataFrame,
                     probe_raw: pd.DataFrame) -> pd.DataFrame:
    """The per-sample signal table with the study's settings."""
    return signals.signal_table(
        train, correct=learned, dynamics=dynamics, probe=probe_raw,
        inconsistency_kwargs={"similarity_threshold": cfg.similarity_threshold},
        probe_kwargs={"min_known_share": cfg.min_known_share, "conflict_quantile": cfg.conflict_quantile},
        rarity_kwargs={"template_df": cfg.template_df})


def thresholds(cfg: IlpConfig) -> diagnosis.CascadeThresholds:
    return diagnosis.CascadeThresholds(rare_max_ratio=cfg.rare_max_ratio, complex_min_len_z=cfg.complex_min_len_z)


def run_seed(cfg: IlpConfig, seed: int, *, world=None, base=None, workdir: Path | None = None,
             verbose: bool = False) -> SeedRecord:
    """One seed of the study (module docstring). ``world`` / ``base`` (``(model, tokenizer)``)
    replace :func:`make_world` / :func:`load_base` (the leak test passes a scrambled world)."""
    import torch

    from epi_utils.lm.evaluate import exact_match

    times: dict[str, float] = {}
    t = time.perf_counter()
    world = world if world is not None else make_world(cfg, seed)
    if base is not None:
        (base, tok), recall = base, {}
    else:
        base, tok, recall = load_base(cfg, world, seed)
    times["world_and_base_model"] = time.perf_counter() - t
    t = time.perf_counter()
    train = world.split("train")
    heldout = world.split("heldout")
    own_stage = {s.id: s.stage for s in train}
    probe_raw = probe.knowledge_probe(base, tok, train, fmt=cfg.probe_format)
    times["probe"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    tmp = None
    if workdir is None:   # the dynamics files are read back at once; nothing stays behind
        tmp = tempfile.TemporaryDirectory(prefix="ilp_")
        workdir = tmp.name
    workdir = Path(workdir)
    stages = schedule(world, replay=cfg.replay, rng=np.random.default_rng([seed, 7]))
    if cfg.knowledge_mix > 0:
        mix = knowledge_mix(world, share=cfg.knowledge_mix, rng=np.random.default_rng([seed, 8]))
        stages = [st + mix for st in stages]
    dyn, stage_runs = train_to_convergence(cfg, model, tok, stages, own_stage=own_stage, workdir=workdir, seed=seed)
    learned, final = final_records(model, tok, train, step=int(dyn["step"].max()) + 1,
                                   train_stage=len(stages) - 1, own_stage=own_stage)
    dyn = pd.concat([dyn, final], ignore_index=True)
    if tmp is not None:
        tmp.cleanup()
    times["sft"] = time.perf_counter() - t

    t = time.perf_counter()
    table = signal_table_for(cfg, train, learned=learned, dynamics=dyn, probe_raw=probe_raw)
    table["truth"] = truth_labels(table)
    if (~table["learned"]).any():
        table = table.join(diagnosis.diagnose(table, thresholds=thresholds(cfg)))
    else:
        table["diagnosis"], table["evidence"] = None, None
    held_acc = float(exact_match(model, tok, heldout).mean()) if heldout else float("nan")
    times["signals_and_diagnosis"] = time.perf_counter() - t
    rec = SeedRecord(seed=seed, table=table, stages=stage_runs, heldout_accuracy=held_acc, base_recall=recall,
                     timings=times)
    if cfg.mitigate and table["diagnosis"].notna().any():
        t = time.perf_counter()
        rec.recovery = mitigate(cfg, seed=seed, model=model, tokenizer=tok, train=train, heldout=heldout, table=table)
        times["mitigation"] = time.perf_counter() - t
    if verbose:
        print(seed_line(rec), flush=True)
    return rec


def seed_line(rec: SeedRecord) -> str:
    """One line about a finished world: unlearned samples, stage lengths, convergence, seconds."""
    unl = int((~rec.table["learned"]).sum())
    stages = ", ".join(f"stage {r.stage} {r.epochs:.1f} epochs ({'converged' if r.converged else 'NOT converged'})"
                       for r in rec.stages)
    return f"world {rec.seed}: {unl} of {len(rec.table)} training samples unlearned; {stages}; {sum(rec.timings.values()):.0f} s"


def mitigate(cfg: IlpConfig, *, seed: int, model, tokenizer, train, heldout, table) -> list[RecoveryRecord]:
    """Every fix with diagnosed samples against ONE compute-matched control shared by the causes
    (same steps, batch size and learning rate; the control draws uniformly from the SFT data)."""
    from epi_utils.ilp.mitigation import InterventionConfig, plan_fix, run_arm
    from epi_utils.lm.evaluate import exact_match

    icfg = InterventionConfig(steps=cfg.mit_steps, batch_size=cfg.mit_batch_size, lr=cfg.mit_lr,
                              fix_share=cfg.mit_fix_share, replay_buffer=cfg.mit_replay_buffer)
    by_id = {s.id: s for s in train}
    diag = table.loc[table["diagnosis"].notna(), ["diagnosis"]]

    def judge(m, targets) -> float:
        probe_samples = [dataclasses.replace(by_id[i], response=r) for i, r in targets.items()]
        return float(exact_match(m, tokenizer, probe_samples).mean())

    def held(m) -> float:
        return float(exact_match(m, tokenizer, heldout).mean()) if heldout else float("nan")

    plans = {c: plan_fix(c, train_samples=train, table=table, diagnosis=diag, config=icfg,
                         rng=np.random.default_rng([seed, 31, i])) for i, c in enumerate(CAUSES)}
    plans = {c: p for c, p in plans.items() if p.targets}
    control, _ = run_arm(model, tokenizer, plan=None, train_samples=train, config=icfg,
                         rng=np.random.default_rng([seed, 99]))
    control_held = held(control)
    out = []
    for i, (cause, plan) in enumerate(plans.items()):
        fixed, _ = run_arm(model, tokenizer, plan=plan, train_samples=train, config=icfg,
                           rng=np.random.default_rng([seed, 37, i]))
        out.append(RecoveryRecord(seed, cause, "fix", len(plan.targets), judge(fixed, plan.targets), held(fixed)))
        out.append(RecoveryRecord(seed, cause, "control", len(plan.targets), judge(control, plan.targets), control_held))
        del fixed
    return out


def _run_one(args) -> SeedRecord:
    cfg, seed, verbose = args
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return run_seed(cfg, seed, verbose=verbose)


def run_all(cfg: IlpConfig, *, verbose: bool = True) -> list[SeedRecord]:
    """:func:`run_seed` for every seed of ``cfg`` (one line per seed when ``verbose``), in
    ``cfg.workers`` processes (seeds are independent; results in seed order)."""
    jobs = [(cfg, s, verbose) for s in cfg.seeds]
    if cfg.workers <= 1 or len(jobs) == 1:
        return [_run_one(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(cfg.workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(_run_one, jobs))


# --------------------------------------------------------------------------- tables over seeds
def pooled_table(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """All seeds' per-sample tables stacked, with a ``seed`` column."""
    if not records:
        raise ValueError("pooled_table: no seed records")
    return pd.concat([r.table.assign(seed=r.seed) for r in records])


def convergence_table(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """Per seed and stage: steps, epochs, share of clean samples learned, converged."""
    return pd.DataFrame([{"seed": r.seed, **dataclasses.asdict(s)} for r in records for s in r.stages])


def timing_table(records: Sequence[SeedRecord]) -> pd.DataFrame:
    """Seconds per phase and seed."""
    return pd.DataFrame({r.seed: r.timings for r in records}).T.rename_axis("seed").round(1)


def world_summary(world) -> pd.DataFrame:
    """Train samples per stage, task and planted cause (``none`` = not planted)."""
    frame = pd.DataFrame([{"task": s.task, "split": s.split, "stage": s.stage,
                           "cause": s.planted_cause or "none"} for s in world.samples])
    return pd.crosstab([frame["stage"], frame["task"]], [frame["split"], frame["cause"]])
