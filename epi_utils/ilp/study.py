"""The ILP study, one world at a time: world -> base model -> knowledge probe -> sequential SFT to
convergence with per-sample dynamics (:mod:`epi_utils.ilp.training`) -> signals -> diagnosis ->
truth -> mitigations against compute-matched controls; :func:`run_study` runs every world of a
config and returns a :class:`Result`.

A seed changes everything that can change: the world (entities, facts, which facts the corpus
states, the samples and their planted causes), the tiny model's pretraining (initialisation and
batch order), the replay draw and the SFT batch order.

**Truth** (for validation only; the diagnosis never reads it), per unlearned sample, first match:
planted ``inconsistency``; planted ``conflict`` / ``missing_knowledge``; *measured* forgetting
(a sample of an earlier stage, reproduced at the end of its own stage and not at the end of
training); planted ``rare_complex``; otherwise ``none``. Forgetting comes from the dynamics, not
from the plan: with replay < 1 a stage-0 sample may or may not be lost; it is *definitional* (its
truth and the cascade's signal are the same measured condition), so the summaries report macro-F1
over the inferred causes beside the total. Knowledge truth is measured on the base model
(:func:`base_knowledge`): a conflict needs a fact the base model answers under other phrasings.

Held-out settings (issue 28): ``n_settings`` further worlds drawn from a family of settings
(:mod:`epi_utils.ilp.settings`) run without mitigation; :class:`Result` scores every diagnosis
method on them with nothing fitted there (:mod:`epi_utils.ilp.heldout`).

**The study's diagnosis** (``diagnoser = "forest"``, the default since it held out better) is a
random forest on the signals, fitted only on worlds other than the one it diagnoses
(:func:`epi_utils.ilp.heldout.apply_diagnosis`: leave-one-world-out on the default design, the
default design's worlds for a held-out setting). Its training labels are those other worlds'
truth; the diagnosed world's own truth never reaches it. So :func:`run_study` runs in three
phases: every world to its signals and rule-cascade diagnosis (:func:`run_seed`, in parallel), the
forests over worlds, then the mitigations of the default design's worlds on the chosen diagnosis
(:func:`mitigate_world`, one job per world and part in parallel, from each world's fine-tuned model
saved in phase one).
"""
from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from epi_utils.ilp import diagnosis, probe, signals, summary, training
from epi_utils.ilp.config import Config
from epi_utils.ilp.diagnosis import NO_CAUSE
from epi_utils.ilp.records import RecoveryRecord, SeedRecord
from epi_utils.workbench import stats
from epi_utils.workbench.progress import log_line
from epi_utils.workbench.progress import progress as default_progress


# --------------------------------------------------------------------------- truth
def truth_labels(table: pd.DataFrame) -> pd.Series:
    """Validation truth per row (module docstring); needs ``planted_cause``, ``stage``, ``learned``
    and the dynamics columns. Learned rows get ``"learned"``.

    With a ``truth_base_knows`` column (what the base model demonstrably knows of the fact the
    sample asks, :func:`base_knowledge`; NaN where not measured), knowledge truth is measured, not
    planted: a planted ``conflict`` whose fact the base model does not know is ``missing_knowledge``
    (it cannot conflict with knowledge it never had), and so is an unplanted fact question whose
    corpus fact it does not know (unless the sample was measurably forgotten)."""
    planted = table["planted_cause"].fillna(NO_CAUSE).astype(str)
    last = int(table["stage"].max())
    forgot = (table["stage"] < last) & (table["dyn_learned_in_stage"].fillna(0) >= 0.5) & ~table["learned"].astype(bool)
    out = pd.Series(NO_CAUSE, index=table.index, dtype=object)
    out[planted == "rare_complex"] = "rare_complex"
    out[forgot | (planted == "forgetting")] = "forgetting"
    for c in ("missing_knowledge", "conflict", "inconsistency"):
        out[planted == c] = c
    if "truth_base_knows" in table.columns:
        knows = table["truth_base_knows"]
        unknown = knows.notna() & (knows.astype(float) < 0.5)
        out[(planted == "conflict") & unknown] = "missing_knowledge"
        out[(planted == NO_CAUSE) & unknown & ~forgot] = "missing_knowledge"
    out[table["learned"].astype(bool)] = "learned"
    return out


def base_knowledge(model, tokenizer, train: Sequence, world) -> pd.Series:
    """Per training sample that asks one fact of the corpus (validation only: reads the generator's
    ``fact_id``): 1.0 when the base model answers the corpus' value under at least 2 of the 3
    phrasings of the fact (the corpus' cloze form and :data:`~epi_utils.data.world.PARAPHRASE_TEMPLATES`),
    else 0.0; NaN for other samples. This is what "the base model knows the fact" means for the
    conflict truth."""
    from epi_utils.data.world import PARAPHRASE_TEMPLATES, RECALL_TEMPLATE, Sample

    facts = {f.fact_id: f for f in world.facts}
    asks = {s.id: facts[s.fact_id] for s in train
            if s.fact_id in facts and facts[s.fact_id].in_pretrain and s.template_id == "fact_qa/main"}
    out = pd.Series(np.nan, index=[s.id for s in train], dtype=float)
    if not asks:
        return out
    uniq = sorted({f.fact_id for f in asks.values()})
    rows = [Sample(id=f"{fid}#{k}", task="fact_qa", split="train", stage=0, planted_cause=None,
                   prompt=t.format(attr=facts[fid].attribute, ent=facts[fid].entity), response=facts[fid].value,
                   template_id="probe") for fid in uniq for k, t in enumerate((RECALL_TEMPLATE, *PARAPHRASE_TEMPLATES))]
    known = probe.knowledge_probe(model, tokenizer, rows, fmt="raw").set_index("sample_id")["known"]
    votes = {fid: sum(bool(known[f"{fid}#{k}"]) for k in range(1 + len(PARAPHRASE_TEMPLATES))) for fid in uniq}
    for sid, f in asks.items():
        out[sid] = 1.0 if votes[f.fact_id] >= 2 else 0.0
    return out


# --------------------------------------------------------------------------- one seed
def signal_table_for(cfg: Config, train: Sequence, *, learned: pd.Series, dynamics: pd.DataFrame,
                     probe_raw: pd.DataFrame) -> pd.DataFrame:
    """The per-sample signal table with the study's settings."""
    return signals.signal_table(
        train, correct=learned, dynamics=dynamics, probe=probe_raw,
        inconsistency_kwargs={"similarity_threshold": cfg.similarity_threshold},
        probe_kwargs={"min_known_share": cfg.min_known_share, "conflict_quantile": cfg.conflict_quantile},
        rarity_kwargs={"template_df": cfg.template_df})


def thresholds(cfg: Config) -> diagnosis.CascadeThresholds:
    return diagnosis.CascadeThresholds(rare_max_ratio=cfg.rare_max_ratio, complex_min_len_z=cfg.complex_min_len_z,
                                       robust_z=cfg.cuts == "adaptive")


def run_seed(cfg: Config, seed: int, *, world=None, base=None, workdir: Path | None = None,
             model_out: Path | None = None) -> SeedRecord:
    """One seed of the study up to the rule cascade's diagnosis (``diagnosis`` / ``evidence``, also
    kept as ``cascade`` / ``cascade_evidence``; the forest replaces ``diagnosis`` over worlds in
    :func:`run_study`). ``world`` / ``base`` (``(model, tokenizer)``) replace
    :func:`~epi_utils.ilp.training.make_world` / :func:`~epi_utils.ilp.training.load_base` (the
    leak test passes a scrambled world); ``model_out``: where the fine-tuned model's weights are
    saved for the mitigations (:func:`mitigate_world`)."""
    import torch

    from epi_utils.lm.evaluate import exact_match

    times: dict[str, float] = {}
    t = time.perf_counter()
    world = world if world is not None else training.make_world(cfg, seed)
    if base is not None:
        (base, tok), recall = base, {}
    else:
        base, tok, recall = training.load_base(cfg, world, seed)
    times["world_and_base_model"] = time.perf_counter() - t
    t = time.perf_counter()
    train = world.split("train")
    heldout = world.split("heldout")
    own_stage = {s.id: s.stage for s in train}
    probe_raw = probe.knowledge_probe(base, tok, train, fmt=cfg.probe_format)
    knows = base_knowledge(base, tok, train, world) if cfg.tiny_backend else None
    times["probe"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    tmp = None
    if workdir is None:   # the dynamics files are read back at once; nothing stays behind
        tmp = tempfile.TemporaryDirectory(prefix="ilp_")
        workdir = tmp.name
    workdir = Path(workdir)
    stages = training.schedule(world, replay=cfg.replay, rng=np.random.default_rng([seed, 7]))
    if cfg.knowledge_mix > 0:
        mix = training.knowledge_mix(world, share=cfg.knowledge_mix, rng=np.random.default_rng([seed, 8]))
        stages = [st + mix for st in stages]
    dyn, stage_runs = training.train_to_convergence(cfg, model, tok, stages, own_stage=own_stage, workdir=workdir, seed=seed)
    learned, final = training.final_records(model, tok, train, step=int(dyn["step"].max()) + 1,
                                   train_stage=len(stages) - 1, own_stage=own_stage)
    dyn = pd.concat([dyn, final], ignore_index=True)
    if tmp is not None:
        tmp.cleanup()
    times["sft"] = time.perf_counter() - t

    t = time.perf_counter()
    table = signal_table_for(cfg, train, learned=learned, dynamics=dyn, probe_raw=probe_raw)
    if knows is not None:
        table["truth_base_knows"] = knows.reindex(table.index)
    table["truth"] = truth_labels(table)
    if (~table["learned"]).any():
        table = table.join(diagnosis.diagnose(table, thresholds=thresholds(cfg)))
    else:
        table["diagnosis"], table["evidence"] = None, None
    table["cascade"], table["cascade_evidence"] = table["diagnosis"], table["evidence"]
    held_acc = float(exact_match(model, tok, heldout).mean()) if heldout else float("nan")
    times["signals_and_diagnosis"] = time.perf_counter() - t
    if model_out is not None:
        torch.save(model.state_dict(), model_out)
    return SeedRecord(seed=seed, table=table, stages=stage_runs, heldout_accuracy=held_acc, base_recall=recall,
                      timings=times, world=summary.world_summary(world))


def mitigate_world(cfg: Config, seed: int, table: pd.DataFrame, model_path: Path,
                   part: str | None = None) -> tuple[list[RecoveryRecord], float]:
    """The mitigation arms of world ``seed`` (:func:`epi_utils.ilp.mitigation.world_arms`; ``part``:
    one of :func:`epi_utils.ilp.mitigation.world_parts`, or None for all) on its table's
    ``diagnosis``, from the fine-tuned weights :func:`run_seed` saved at ``model_path``;
    ``(records, seconds)``."""
    import torch

    from epi_utils.ilp.mitigation import world_arms

    t = time.perf_counter()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    world = training.make_world(cfg, seed)
    model, tok, _ = training.load_base(cfg, world, seed, recall=False)
    model.load_state_dict(torch.load(model_path, map_location=next(model.parameters()).device))
    model.eval()
    out = world_arms(cfg, seed=seed, model=model, tokenizer=tok, train=world.split("train"),
                     heldout=world.split("heldout"), table=table, part=part)
    return out, time.perf_counter() - t


def _run_one(args) -> SeedRecord:
    cfg, seed, workdir, setting, model_out = args
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if setting is None:
        return run_seed(cfg, seed, workdir=workdir, model_out=model_out)
    rec = run_seed(setting.apply(cfg).replace(mitigate=False), setting.seed, workdir=workdir)
    rec.setting, rec.setting_text = setting.name, setting.describe()
    return rec


def family_settings(cfg: Config) -> list:
    """The held-out settings of ``cfg`` (:func:`epi_utils.ilp.settings.family`; empty for
    ``n_settings = 0`` or a non-tiny backend)."""
    from epi_utils.ilp import settings

    if cfg.n_settings == 0 or not cfg.tiny_backend:
        return []
    return settings.family(cfg, n=cfg.n_settings, seed=cfg.settings_seed, cold=cfg.settings_cold,
                           warm_seeds=cfg.n_seeds)


def _mitigate_one(args):
    return mitigate_world(*args)


@contextlib.contextmanager
def _worker_pool(cfg: Config):
    """``cfg.workers`` spawned processes shared by the worlds and the mitigations (each process
    imports torch and transformers once: ~4 s), or None for ``workers = 1``."""
    if cfg.workers <= 1:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn")) as ex:
        yield ex


def _world_jobs(cfg: Config, *, workdir: Path | None, models: Path | None) -> list[tuple]:
    """:func:`_run_one`'s jobs: every seed of ``cfg`` (the default design first; with ``models``,
    each saves its fine-tuned weights there), then every held-out setting."""
    jobs = [(cfg, s, workdir, None, models / f"seed{s}.pt" if models is not None else None) for s in cfg.seeds]
    return jobs + [(cfg, st.seed, workdir, st, None) for st in family_settings(cfg)]


# --------------------------------------------------------------------------- the study
@dataclass
class Result:
    """Every world of one run: the config and one :class:`~epi_utils.ilp.records.SeedRecord` per
    world; summaries over worlds as (cached) properties. ``estimate``: the full-scale estimate of a
    rehearsal (:func:`epi_utils.ilp.rehearsal.rehearse`), else None."""

    config: Config
    records: list[SeedRecord]
    seconds: float = float("nan")
    estimate: Any = None
    diagnosis_seconds: float = float("nan")   # the forests over worlds (:func:`run_study`)
    #: the forests' predictions per world (:func:`epi_utils.ilp.heldout.apply_diagnosis` in :func:`run_study`)
    forests: dict | None = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def _cached(self, name: str, make: Callable):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def __post_init__(self):
        self.family = [r for r in self.records if r.setting != "default"]
        self.records = [r for r in self.records if r.setting == "default"]

    @property
    def heldout_scores(self) -> pd.DataFrame:
        """Per world and method, macro-F1 on the fitting worlds and the held-out settings
        (:func:`epi_utils.ilp.heldout.evaluate`)."""
        from epi_utils.ilp import heldout
        return self._cached("heldout", lambda: heldout.evaluate(self.records, self.family,
                                                                thresholds=thresholds(self.config),
                                                                seed=self.config.seed, forests=self.forests))

    @property
    def heldout_pooled(self) -> pd.DataFrame:
        from epi_utils.ilp import heldout
        return self._cached("heldout_pooled", lambda: heldout.pooled_table(self.heldout_scores))

    @property
    def comparisons_focused(self) -> dict[str, stats.Comparison]:
        """Targeted fix vs the focused control per cause, paired over worlds."""
        return self._cached("comparisons_focused", lambda: summary.mitigation_comparisons(self.records, against="focused")
                            if self.config.mitigate else {})

    def settings_table(self) -> pd.DataFrame:
        """One row per held-out setting: what it changes, its world seed and its unlearned samples."""
        return pd.DataFrame([{"setting": r.setting, "world seed": r.seed, "what it changes": r.setting_text,
                              "unlearned": int((~r.table["learned"].astype(bool)).sum()),
                              "stage steps": " / ".join(str(s.steps) for s in r.stages),
                              "stages converged": sum(s.converged for s in r.stages)} for r in self.family],
                            columns=["setting", "world seed", "what it changes", "unlearned", "stage steps",
                                     "stages converged"])

    def card(self):
        """The index's card: does the diagnosis hold on settings it was not fitted on?"""
        from epi_utils.ilp import heldout
        from epi_utils.workbench.cards import Card, Headline, answer_sentence

        heads = []
        d = self.diagnosis
        who = {"forest": "random forest, leave-one-world-out", "cascade": "rule cascade"}[self.config.diagnoser]
        if d.macro_f1 is not None:
            heads.append(Headline.from_interval(f"diagnosis macro-F1, default design ({who}; five causes)",
                                                d.macro_f1, unit="F1"))
        if d.macro_f1_inferred is not None:
            heads.append(Headline.from_interval(f"diagnosis macro-F1, default design ({who}; inferred causes)",
                                                d.macro_f1_inferred, unit="F1"))
        scores = self.heldout_scores
        held = scores[scores["part"] == "held out"] if not scores.empty else scores
        answer = None
        for m in ("forest", "cascade"):
            vals = held.loc[held["method"] == m, "macro_f1"].dropna().tolist() if not held.empty else []
            if len(vals) >= 2:
                heads.append(Headline.from_interval(f"macro-F1 on held-out settings, {heldout.METHOD_NAMES[m]}",
                                                    stats.interval(vals, unit="settings", bounds=(0.0, 1.0)),
                                                    unit="F1"))
        cmp = heldout.better_method(scores) if not scores.empty else None
        if cmp is not None:
            answer = answer_sentence(cmp, unit="F1")
        elif "missing_knowledge" in self.comparisons:
            answer = answer_sentence(self.comparisons["missing_knowledge"])
        if answer is None:
            answer = "Too few worlds or held-out settings for a paired comparison in this run."
        fix = self.comparisons_focused.get("missing_knowledge")
        if fix is not None and len(heads) < 5:
            heads.append(Headline("knowledge injection minus focused control, recovery of diagnosed samples",
                                  float(fix.diff.mean), float(fix.diff.low), float(fix.diff.high),
                                  "share of samples", fix.diff.label()))
        while len(heads) < 3:
            heads.append(Headline("worlds of the default design", float(len(self.records)), unit="worlds"))
        return Card(question="Does the diagnosis of unlearned samples hold on world settings it was not fitted on?",
                    answer=answer, headlines=tuple(heads[:5]), figure="diagnosis_heldout")

    @property
    def pooled(self) -> pd.DataFrame:
        """All worlds' per-sample tables stacked, with a ``seed`` column (index ``sample_id``)."""
        return self._cached("pooled", lambda: summary.pooled_table(self.records))

    @property
    def diagnosis(self) -> summary.DiagnosisSummary:
        """Diagnosis against truth, scored per world (:func:`~epi_utils.ilp.summary.diagnosis_summary`)."""
        return self._cached("diagnosis", lambda: summary.diagnosis_summary(self.records))

    @property
    def manifestation(self) -> pd.DataFrame:
        """Unlearned samples per truth cause (:func:`~epi_utils.ilp.summary.manifestation`)."""
        return self._cached("manifestation", lambda: summary.manifestation(self.records))

    @property
    def comparisons(self) -> dict[str, stats.Comparison]:
        """Targeted fix vs compute-matched control per cause, paired over worlds (empty without mitigation)."""
        return self._cached("comparisons", lambda: summary.mitigation_comparisons(self.records)
                            if self.config.mitigate else {})

    def frames(self) -> dict[str, pd.DataFrame]:
        """The per-unit tables written beside metrics.json: ``samples`` (one row per world and
        training sample), ``convergence`` (per world and stage), ``recovery`` (per world, cause and
        arm), and the summaries over worlds ``manifestation``, ``per_cause``, ``none_bucket``,
        ``mitigation``."""
        return {"samples": self.pooled.reset_index(),
                "convergence": summary.convergence_table(self.records),
                "recovery": summary.recovery_frame(self.records),
                "manifestation": self.manifestation.reset_index(),
                "per_cause": self.diagnosis.per_cause.reset_index(),
                "none_bucket": self.diagnosis.none_bucket.reset_index(),
                "mitigation": summary.mitigation_table(self.comparisons, self.comparisons_focused).reset_index(),
                "heldout_scores": self.heldout_scores,
                "heldout_pooled": self.heldout_pooled,
                "settings": self.settings_table()}

    def metrics(self) -> dict:
        """The metrics.json payload (:func:`~epi_utils.ilp.summary.headline_metrics`)."""
        out = summary.headline_metrics(self.records, self.diagnosis, self.manifestation, self.comparisons)[0]
        out["mitigation_vs_focused"] = {c: cmp.to_dict() for c, cmp in self.comparisons_focused.items()}
        out["heldout"] = summary.heldout_metrics(self.heldout_scores)
        return out

    def headlines(self) -> list[str]:
        """Dotted metric names for the index (plus the rehearsal's GPU-hours when there is an estimate)."""
        heads = summary.headline_metrics(self.records, self.diagnosis, self.manifestation, self.comparisons)[1]
        return heads + (["rehearsal.gpu_hours"] if self.estimate is not None else [])

    def timings(self) -> dict:
        """Seconds per world and phase (``seed<k>_<phase>``) and the whole run (``total``)."""
        out = {f"seed{r.seed}_{k}": v for r in self.records for k, v in r.timings.items()}
        out.update({f"{r.setting}_seed{r.seed}_{k}": v for r in self.family for k, v in r.timings.items()})
        if np.isfinite(self.diagnosis_seconds):
            out["forest_diagnosis"] = self.diagnosis_seconds
        if np.isfinite(self.seconds):
            out["total"] = self.seconds
        return out


def run_study(cfg: Config, *, progress: Callable = default_progress, workdir: Path | None = None) -> Result:
    """Every world of ``cfg`` (:func:`run_seed` per seed, in ``cfg.workers`` processes).

    ``workdir``: where the per-stage dynamics files are written (default: a temporary folder per
    world, removed once read back).

    With several workers one queue feeds them: the worlds (the default design first), then, as soon
    as the default design's worlds are done and diagnosed, their mitigation parts, which so fill
    the workers while the last held-out settings still train (no barrier between the phases); the
    held-out settings are diagnosed when they are done. Every job has its own seeds and the
    forests are functions of their fitting worlds, so the records are those of the phases run one
    after the other (with ``workers = 1`` they are)."""
    from epi_utils.ilp import heldout
    from epi_utils.ilp.mitigation import arm_order, world_parts

    start = time.perf_counter()
    forest_seconds, forests = 0.0, {}
    with tempfile.TemporaryDirectory(prefix="ilp_models_") as models, _worker_pool(cfg) as pool:
        models = Path(models)
        world_jobs = _world_jobs(cfg, workdir=workdir, models=models if cfg.mitigate else None)
        n_default = len(cfg.seeds)
        queued: list = []   # futures of the jobs in pool's queue (cancelled if a job fails)

        def submit(fn, jobs):
            if pool is None or len(jobs) <= 1:
                return None
            futures = [pool.submit(fn, job) for job in jobs]
            queued.extend(futures)
            return futures

        try:
            pending = submit(_run_one, world_jobs)
            worlds = (pending[i].result() if pending else _run_one(job) for i, job in enumerate(world_jobs))
            records, todo, mit_jobs, mit_pending = [], [], [], None
            for rec in progress(worlds, desc="world", total=len(world_jobs), unit="world"):
                log_line(summary.seed_line(rec))
                records.append(rec)
                if len(records) != n_default:
                    continue
                # the default design is done: its diagnosis (forests over its own worlds only), then
                # its mitigations, one job per world and part (the uniform control, each diagnosed
                # cause's arms: independent, each with its own generator), queued behind the worlds
                t = time.perf_counter()
                forests.update(heldout.apply_diagnosis(records, [], method=cfg.diagnoser, seed=cfg.seed))
                forest_seconds += time.perf_counter() - t
                todo = [r for r in records if cfg.mitigate and r.table["diagnosis"].notna().any()]
                mit_jobs = [(cfg, r.seed, r.table.copy(), models / f"seed{r.seed}.pt", part)
                            for r in todo for part in world_parts(r.table)]
                mit_pending = submit(_mitigate_one, mit_jobs)
            default, family = records[:n_default], records[n_default:]
            t = time.perf_counter()
            forests.update(heldout.apply_diagnosis(default, family, method=cfg.diagnoser, seed=cfg.seed, only=family))
            forest_seconds += time.perf_counter() - t
            parts = list(progress((f.result() for f in mit_pending) if mit_pending else map(_mitigate_one, mit_jobs),
                                  desc="mitigation", total=len(mit_jobs), unit="mitigation"))
        except BaseException:
            for f in queued:
                f.cancel()
            raise
        for r in todo:
            mine = [out for job, out in zip(mit_jobs, parts) if job[1] == r.seed]
            r.recovery = sorted((rec for recs, _ in mine for rec in recs), key=arm_order)
            r.timings["mitigation"] = sum(seconds for _, seconds in mine)
    return Result(config=cfg, records=records, seconds=time.perf_counter() - start, diagnosis_seconds=forest_seconds,
                  forests=forests)
