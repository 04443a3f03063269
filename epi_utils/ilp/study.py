"""The end-to-end ILP study the notebook calls: world -> base model -> probe -> SFT with dynamics ->
detection -> signals -> diagnosis -> mitigations vs controls, one seed at a time.

Everything a seed produces is returned as tables (``SeedResult``); nothing is printed or plotted
here. Seeds change the SFT batch order and the intervention sampling; the world and the
pretrained base model are shared by all seeds (the base model is cached by the testbed).
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import detection, diagnosis, probe, recovery, signals
from epi_utils.ilp.mitigation import InterventionConfig, plan_fix, run_arm

BACKENDS = ("tiny", "smollm2")


@dataclass(frozen=True)
class StudyConfig:
    """All settings of one study run (flat, built from the notebook's parameters; validated)."""
    backend: str = "tiny"                  # tiny | smollm2
    world_seed: int = 0
    n_entities: int = 40
    n_train_per_task: int = 48
    n_heldout_per_task: int = 16
    tasks: tuple[str, ...] = ()            # () = every task of the world
    missing_knowledge_rate: float = 0.1
    conflict_rate: float = 0.1
    inconsistency_rate: float = 0.1
    forgetting_rate: float = 0.1
    rare_complex_rate: float = 0.1
    n_stages: int = 2
    pretrain_epochs: int = 0               # tiny: pretraining epochs on the corpus (0 = the testbed's default; cached)
    replay: float = 1.0                    # share of earlier-stage samples replayed in each later stage
    knowledge_replay: float = 0.0          # share of corpus facts mixed into every SFT stage as cloze samples
    sft_epochs: float = 12.0               # per stage
    sft_lr: float = 1e-3
    sft_batch_size: int = 16
    eval_every: int = 0                    # 0 = evaluation points at stage ends only
    normalize: str = "strip"               # exact-match normalisation
    pass_n: int = 0                        # pass@N samples (0 = skip)
    temperature: float = 1.0
    similarity_threshold: float = 0.95     # near-duplicate prompts (char 3-gram Jaccard)
    maybe_rank: int = 1
    maybe_prob: float = 0.3
    conflict_confidence: float = 0.5
    conflict_quantile: float = 0.05        # < 0 = use conflict_confidence; else quantile of known-fact confidence
    thresholds: diagnosis.CascadeThresholds = field(default_factory=diagnosis.CascadeThresholds)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    mitigate: bool = True
    device: str = "auto"
    threads: int = 1                       # torch CPU threads (0 = leave torch's default)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"StudyConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.normalize not in ("strip", "lower", "none"):
            raise ValueError(f"StudyConfig.normalize must be 'strip', 'lower' or 'none', got {self.normalize!r}")
        if self.sft_epochs <= 0:
            raise ValueError(f"StudyConfig.sft_epochs must be > 0, got {self.sft_epochs}")
        if self.pass_n < 0:
            raise ValueError(f"StudyConfig.pass_n must be >= 0, got {self.pass_n}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "StudyConfig":
        """Build from a flat mapping (the notebook's parameters). Keys of
        :class:`~epi_utils.ilp.diagnosis.CascadeThresholds` and :class:`InterventionConfig`
        (prefixed ``mit_``) go to those; unknown keys raise ``ValueError``."""
        own = {f.name for f in fields(cls)} - {"thresholds", "intervention"}
        th_names = {f.name for f in fields(diagnosis.CascadeThresholds)}
        mit_names = {f"mit_{f.name}" for f in fields(InterventionConfig)}
        kw, th, mit = {}, {}, {}
        for k, v in params.items():
            if k in own:
                kw[k] = tuple(v) if k == "tasks" else v
            elif k in th_names:
                th[k] = v
            elif k in mit_names:
                mit[k[4:]] = v
            else:
                raise ValueError(f"unknown study parameter {k!r}; allowed: {sorted(own | th_names | mit_names)}")
        return cls(**kw, thresholds=diagnosis.CascadeThresholds(**th), intervention=InterventionConfig(**mit))


@dataclass
class SeedResult:
    seed: int
    table: pd.DataFrame                    # per training sample: fields, signals, learned, diagnosis, evidence
    heldout_accuracy: float
    task_heldout: dict[str, float]
    recovery_rows: list[dict]
    stage_end_eval: list[dict[str, float]]
    timings: dict[str, float]


def make_world(cfg: StudyConfig):
    from epi_utils.data.world import TASKS, WorldConfig, build_world

    wc = WorldConfig(seed=cfg.world_seed, n_entities=cfg.n_entities, tasks=cfg.tasks or TASKS,
                     n_train_per_task=cfg.n_train_per_task, n_heldout_per_task=cfg.n_heldout_per_task,
                     missing_knowledge_rate=cfg.missing_knowledge_rate, conflict_rate=cfg.conflict_rate,
                     inconsistency_rate=cfg.inconsistency_rate, forgetting_rate=cfg.forgetting_rate,
                     rare_complex_rate=cfg.rare_complex_rate, n_stages=cfg.n_stages)
    return build_world(wc, facts="real" if cfg.backend == "smollm2" else "synthetic")


def schedule(world, *, replay: float, rng: np.random.Generator) -> list[list]:
    """The sequential SFT schedule with a replay buffer.

    Stage k trains its own samples (``world.stages()[k]``) plus a share ``replay`` of the samples
    of earlier stages, drawn at random, except those whose prompt is retrained with another target
    in a later stage (observable in the data: the later copy supersedes them). ``replay = 0`` is
    plain sequential fine-tuning, where a tiny model forgets almost all of stage 0; ``replay = 1``
    keeps every earlier sample in training, so the left-side forgetting that remains is the one
    caused by the overwrites. Replayed samples keep their id (the SFT engine then records them
    with the stage they were last trained in)."""
    if not 0.0 <= replay <= 1.0:
        raise ValueError(f"replay must be in [0, 1], got {replay}")
    base = world.stages()
    later_prompts = {}
    for k, st in enumerate(base):
        for s in st:
            later_prompts.setdefault(signals.normalize_text(s.prompt), []).append((k, s.response))
    out = []
    for k, st in enumerate(base):
        earlier = [s for j in range(k) for s in base[j]
                   if not any(kk > s.stage and r != s.response
                              for kk, r in later_prompts[signals.normalize_text(s.prompt)])]
        n = int(round(replay * len(earlier)))
        pick = sorted(rng.choice(len(earlier), size=n, replace=False).tolist()) if n else []
        out.append(list(st) + [earlier[i] for i in pick])
    return out


CORPUS_PREFIX = "corpus/"


def corpus_samples(world, *, share: float, rng: np.random.Generator) -> list:
    """Pretraining facts as SFT-format cloze samples (prompt = the recall/probe text of the fact,
    response = its corpus value), a random ``share`` of the facts stated in the corpus; ids start
    with ``"corpus/"``. Mixing them into SFT is the usual "pretraining data mixing" that keeps
    parametric knowledge alive; it also makes the pretraining answer compete with a conflicting
    SFT target."""
    from epi_utils.data.world import Sample

    if not 0.0 < share <= 1.0:
        raise ValueError(f"knowledge_replay share must be in (0, 1], got {share}")
    facts = [f for f in world.facts if f.in_pretrain]
    pick = sorted(rng.choice(len(facts), size=int(round(share * len(facts))), replace=False).tolist())
    return [Sample(id=f"{CORPUS_PREFIX}{i:04d}", task="corpus_recall", split="train",
                   prompt=probe.probe_prompt(world, facts[i]), response=facts[i].value, stage=0, planted_cause=None,
                   template_id="corpus/recall", fact_id=facts[i].fact_id) for i in pick]


def load_base(cfg: StudyConfig, world):
    """The pre-SFT model and tokenizer (tiny: pretrained on the world's corpus, cached)."""
    import torch

    from epi_utils.workbench import runs
    from epi_utils.lm.models import load_model

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.backend == "tiny":
        from epi_utils.lm.models import TINY_PRETRAIN
        pre = dataclasses.replace(TINY_PRETRAIN, epochs=cfg.pretrain_epochs) if cfg.pretrain_epochs else TINY_PRETRAIN
        return load_model("tiny", world=world, device=str(runs.resolve_device(cfg.device)), tiny_pretrain=pre,
                          progress=False)
    return load_model(cfg.backend, world=world, device=str(runs.resolve_device(cfg.device)))


def run_seed(cfg: StudyConfig, *, seed: int, world, base_model, tokenizer, workdir: Path | None = None,
             progress: bool = True) -> SeedResult:
    """One seed of the whole study (see module docstring)."""
    import torch

    from epi_utils.lm.evaluate import exact_match, task_accuracy
    from epi_utils.lm.train import TrainConfig, train_sft

    times: dict[str, float] = {}
    t = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stages = schedule(world, replay=cfg.replay, rng=np.random.default_rng([seed, 7]))
    if cfg.knowledge_replay > 0:
        extra = corpus_samples(world, share=cfg.knowledge_replay, rng=np.random.default_rng([seed, 8]))
        stages = [st + [dataclasses.replace(x, stage=k) for x in extra] for k, st in enumerate(stages)]
    train = world.split("train")
    heldout = world.split("heldout")
    raw_probe = probe.knowledge_probe(base_model, tokenizer, world, train)
    times["probe"] = time.perf_counter() - t

    t = time.perf_counter()
    model = copy.deepcopy(base_model)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ilp_"))
    dyn_path = workdir / f"dynamics_seed{seed}.jsonl"
    tc = TrainConfig(lr=cfg.sft_lr, batch_size=cfg.sft_batch_size, epochs=cfg.sft_epochs, eval_every=cfg.eval_every,
                     seed=seed)
    res = train_sft(model, tokenizer, stages, config=tc, dynamics_path=dyn_path, eval_samples=heldout, progress=progress)
    times["sft"] = time.perf_counter() - t

    t = time.perf_counter()
    learned = detection.detect_unlearned(model, tokenizer, train, normalize=cfg.normalize)
    dyn = signals.read_dynamics(dyn_path)
    dyn = dyn[~dyn["sample_id"].astype(str).str.startswith(CORPUS_PREFIX)]
    table = signals.signal_table(
        train, correct=learned, dynamics=dyn, probe=probe.probe_table_for_signals(raw_probe),
        inconsistency_kwargs={"similarity_threshold": cfg.similarity_threshold},
        probe_kwargs={"maybe_rank": cfg.maybe_rank, "maybe_prob": cfg.maybe_prob,
                      "conflict_confidence": cfg.conflict_confidence,
                      "conflict_quantile": cfg.conflict_quantile if cfg.conflict_quantile >= 0 else None})
    if cfg.pass_n:
        gen = torch.Generator().manual_seed(seed)
        table[f"pass_at_{cfg.pass_n}"] = detection.pass_at_n_learned(
            model, tokenizer, train, n=cfg.pass_n, temperature=cfg.temperature, generator=gen).reindex(table.index)
    table["planted"] = diagnosis.planted_labels(table)
    held_ok = exact_match(model, tokenizer, heldout, normalize=cfg.normalize) if heldout else np.zeros(0, bool)
    held_acc = float(held_ok.mean()) if len(held_ok) else float("nan")
    times["detect_signals"] = time.perf_counter() - t

    diag = diagnosis.diagnose(table, thresholds=cfg.thresholds) if (~table["learned"]).any() else \
        pd.DataFrame(columns=["diagnosis", "evidence"])
    table = table.join(diag)
    rows: list[dict] = []
    if cfg.mitigate and len(diag):
        t = time.perf_counter()
        rows = mitigate(cfg, seed=seed, world=world, model=model, tokenizer=tokenizer, train=train, heldout=heldout,
                        table=table, diag=diag, heldout_before=held_acc, rng=rng)
        times["mitigation"] = time.perf_counter() - t
    return SeedResult(seed=seed, table=table, heldout_accuracy=held_acc,
                      task_heldout=task_accuracy(heldout, held_ok) if heldout else {},
                      recovery_rows=rows, stage_end_eval=res.stage_end_eval, timings=times)


def mitigate(cfg: StudyConfig, *, seed: int, world, model, tokenizer, train, heldout, table, diag, heldout_before,
             rng) -> list[dict]:
    """Every fix with diagnosed samples, plus ONE compute-matched control shared by all causes
    (each fix and the control train ``cfg.intervention.steps`` steps of the same batch size)."""
    from epi_utils.lm.evaluate import exact_match

    by_id = {s.id: s for s in train}

    def judge(m, targets: Mapping[str, str]) -> pd.Series:
        ids = list(targets)
        probe_samples = [copy.copy(by_id[i]) for i in ids]
        probe_samples = [_with_response(s, targets[s.id]) for s in probe_samples]
        ok = exact_match(m, tokenizer, probe_samples, normalize=cfg.normalize)
        return pd.Series(ok, index=ids)

    def held(m) -> float:
        return float(exact_match(m, tokenizer, heldout, normalize=cfg.normalize).mean()) if heldout else float("nan")

    plans = {c: plan_fix(c, world=world, train_samples=train, table=table, diagnosis=diag, config=cfg.intervention,
                         rng=rng) for c in diagnosis.CAUSES}
    plans = {c: p for c, p in plans.items() if p.targets}
    rows = []
    control, _ = run_arm(model, tokenizer, plan=None, train_samples=train, config=cfg.intervention,
                         rng=np.random.default_rng([seed, 99]))
    control_held = held(control)
    for cause, plan in plans.items():
        fixed, _ = run_arm(model, tokenizer, plan=plan, train_samples=train, config=cfg.intervention,
                           rng=np.random.default_rng([seed, diagnosis.CAUSES.index(cause)]))
        rows.append(recovery.recovery_row(seed=seed, cause=cause, arm="fix", unlearned_before=list(plan.targets),
                                          correct_after=judge(fixed, plan.targets), heldout_before=heldout_before,
                                          heldout_after=held(fixed)))
        rows.append(recovery.recovery_row(seed=seed, cause=cause, arm="control", unlearned_before=list(plan.targets),
                                          correct_after=judge(control, plan.targets), heldout_before=heldout_before,
                                          heldout_after=control_held))
        del fixed
    return rows


def _with_response(sample, response: str):
    import dataclasses
    return dataclasses.replace(sample, response=response)


# --------------------------------------------------------------------------- aggregation over seeds
def pooled_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """All seeds' per-sample tables stacked, with a ``seed`` column (index: sample_id)."""
    if not results:
        raise ValueError("pooled_table: no seed results")
    return pd.concat([r.table.assign(seed=r.seed) for r in results])


def diagnosis_summary(results: Sequence[SeedResult]) -> dict:
    """Pooled confusion (planted x diagnosed counts over seeds), per-cause scores, macro-F1 per seed
    and pooled, and the learned (cross-validated) variant's macro-F1 on the pooled unlearned rows."""
    from epi_utils.workbench import stats

    pooled = pooled_table(results)
    unl = pooled[~pooled["learned"].astype(bool)]
    if unl.empty:
        raise diagnosis.DiagnosisInputError("no unlearned samples in any seed: nothing to diagnose")
    conf = diagnosis.confusion(unl["planted"], unl["diagnosis"])
    per_seed = []
    for r in results:
        u = r.table[~r.table["learned"].astype(bool)]
        if len(u):
            per_seed.append(diagnosis.macro_f1(diagnosis.confusion(u["planted"], u["diagnosis"])))
    learned_pred = diagnosis.learned_diagnosis(unl.reset_index(drop=True), unl["planted"].tolist(), seed=0)
    conf_learned = diagnosis.confusion(unl["planted"], learned_pred)
    return {"confusion": conf, "scores": diagnosis.per_cause_scores(conf), "macro_f1": diagnosis.macro_f1(conf),
            "macro_f1_per_seed": per_seed, **stats.with_ci("macro_f1_seed", per_seed),
            "confusion_learned": conf_learned, "macro_f1_learned": diagnosis.macro_f1(conf_learned)}


def manifestation(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Per planted cause (and ``none``): samples, share unlearned after SFT (does the cause
    manifest?), pooled over seeds."""
    pooled = pooled_table(results)
    g = pooled.groupby("planted")["learned"]
    return pd.DataFrame({"n": g.size(), "unlearned_share": 1.0 - g.mean().astype(float)})


# --------------------------------------------------------------------------- notebook helpers
def params_from_namespace(namespace: Mapping[str, Any]) -> dict:
    """The study parameters among a notebook's globals (names of :class:`StudyConfig`, its
    cascade thresholds and ``mit_*`` intervention fields); other names are ignored."""
    names = ({f.name for f in fields(StudyConfig)} - {"thresholds", "intervention"}) | \
        {f.name for f in fields(diagnosis.CascadeThresholds)} | {f"mit_{f.name}" for f in fields(InterventionConfig)}
    return {k: namespace[k] for k in names if k in namespace}


def world_summary(world) -> pd.DataFrame:
    """Train samples per task and planted cause (``none`` = not planted), plus held-out counts."""
    frame = pd.DataFrame([{"task": s.task, "split": s.split, "stage": s.stage,
                           "cause": s.planted_cause or "none"} for s in world.samples])
    tab = pd.crosstab([frame["stage"], frame["task"]], [frame["split"], frame["cause"]])
    return tab


def run_all(cfg: StudyConfig, *, seeds: Sequence[int], world, base_model, tokenizer, progress: bool = True):
    """:func:`run_seed` for every seed (tqdm over seeds)."""
    from tqdm.auto import tqdm

    if not seeds:
        raise ValueError("run_all: seeds is empty")
    return [run_seed(cfg, seed=s, world=world, base_model=base_model, tokenizer=tokenizer, progress=False)
            for s in tqdm(list(seeds), desc="seeds", disable=not progress)]


def timing_table(results: Sequence[SeedResult]) -> pd.DataFrame:
    """Seconds per phase and seed."""
    return pd.DataFrame({r.seed: r.timings for r in results}).T.rename_axis("seed").round(1)
