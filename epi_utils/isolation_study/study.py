"""Study 02's design: two-stage sequential SFT, every policy x isolation ratio x seed, with bounds.

One *run* = a copy of the pretrained model + one method + ``train_sft`` on the stages
(stage 0 tasks, then stage 1 tasks; the same number of optimizer steps per stage for every
method), scored at each stage end on the **held-out test** samples of every task (the primary
measure) and on some train samples (memorisation, a secondary measure). Methods:

- masking policies (:data:`config.MASKED`, :mod:`epi_utils.isolation.policies`), each at every ratio;
- ``full_sft`` (floor); ``separate``: a fresh copy of the pretrained model trained on stage 1
  alone (a separate model per stage: stage 0 is retained exactly, so its stage-0 score is
  ``full_sft``'s score after stage 0 on the same seed; the retention ceiling);
- ``replay``: full SFT whose stage 1 also holds ``replay_samples`` stored stage-0 train samples
  per stage-0 task, with the same number of optimizer steps and batch size (matched compute:
  the replayed batches replace stage-1 batches, they are not added);
- ``ewc``: online EWC whose ``lambda`` is chosen from ``ewc_lambdas`` on the **validation**
  split (a third disjoint sample set) by the mean score after stage 1, on the first seed.

Seeds vary the data sampling (which samples of a fixed pool are train / validation / test,
:func:`seed_data`), batch order and the random masks; the pretrained model is fixed
(``pretrain_seed``) and trained once, cached (``epi_utils.lm.models``).

Interference copies (``interference_rate`` > 0): a share of stage-0 train prompts re-trained in
stage 1 with another answer, under their OWN task label ``<task>~interference``, so no policy
lets them move the weights it protects for ``<task>`` (the confound of the earlier design).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from epi_utils.isolation.policies import make_policy
from epi_utils.isolation_study.config import MODEL_SIZES, StudyConfig
from epi_utils.lm.sft_format import encode_example, pad_batch, pad_id
from epi_utils.lm.train import TrainConfig, TrainHook, train_sft

INTERFERENCE = "~interference"


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


@dataclass
class RunRecord:
    """One run. Scores are per stage end, ``{task: mean score}`` (test / val: held-out)."""

    method: str
    seed: int
    ratio: float | None
    ewc_lambda: float | None
    tuning: bool
    stage_tasks: list[tuple[str, ...]]
    test: list[dict[str, float]] = field(default_factory=list)
    test_exact: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    train: list[dict[str, float]] = field(default_factory=list)
    moved_owned_stage0: float = float("nan")    # share of stage-0-owned elements (at stage 1 start) changed in stage 1
    protected_share: float = float("nan")       # share of elements protected after training
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # training loss of every optimizer step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StudyResult:
    records: list[RunRecord]
    ewc_lambda: float | None
    ewc_tuning: list[dict]                      # {"ewc_lambda", "val_score"} per candidate
    stage_tasks: list[tuple[str, ...]]
    pretrain: dict
    tuning_seconds: float = 0.0

    def timings(self) -> dict[str, float]:
        """Seconds per method (all seeds and ratios) and for EWC's tuning: provenance, not metrics."""
        out: dict[str, float] = {}
        for r in self.records:
            out[f"seconds/{r.method}"] = out.get(f"seconds/{r.method}", 0.0) + r.seconds
        out["seconds/ewc_tuning"] = self.tuning_seconds
        out["seconds/total"] = sum(r.seconds for r in self.records) + self.tuning_seconds
        return out


# ----------------------------------------------------------------------------- data
def study_world(cfg: StudyConfig, *, data_files=None):
    """The fixed sample pool: the synthetic world (``world_seed``, clean tasks, ``n_train + n_val +
    n_test`` samples per task) or the Hugging Face tasks (:func:`epi_utils.isolation_study.hf_data.hf_world`)."""
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


def seed_data(world, tokenizer, cfg: StudyConfig, seed: int) -> SeedData:
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


# ----------------------------------------------------------------------------- model
def load_base(cfg: StudyConfig, world, *, progress: bool = False):
    """``(model, tokenizer, pretrain meta)``: the ``tiny`` GPT-2 of ``model_size`` pretrained once on
    the world's corpus (cached; ``pretrain_seed``), or any model :func:`epi_utils.lm.models.load_model`
    knows."""
    from epi_utils.lm import models

    if cfg.model != "tiny":
        model, tok = models.load_model(cfg.model, world=world, device=cfg.device)
        return model, tok, {"model": cfg.model}
    mc = models.TinyModelConfig(**MODEL_SIZES[cfg.model_size])
    pc = models.TinyPretrainConfig(epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr, seed=cfg.pretrain_seed)
    model, tok = models.load_model("tiny", world=world, device=cfg.device, pretrain=cfg.pretrain, progress=progress,
                                   tiny_model=mc, tiny_pretrain=pc)
    meta = models.tiny_pretrain_meta(world, tiny_model=mc, tiny_pretrain=pc) if cfg.pretrain else {}
    meta = {k: v for k, v in meta.items() if k != "world"}
    meta["n_params"] = sum(p.numel() for p in model.parameters())
    return model, tok, meta


# ----------------------------------------------------------------------------- hooks
def score_sets(model, tokenizer, samples: Sequence, *, metric: dict[str, str], max_new_tokens: int,
               batch_size: int, left_padded: bool) -> tuple[dict[str, float], dict[str, float]]:
    """(primary score, exact match) per task on ``samples``: greedy decoding, grouped by prompt
    length (``left_padded=False``) or left-padded (real data), ``max_new_tokens`` = the longest
    reference + 2 capped at ``max_new_tokens`` (0: no cap)."""
    from epi_utils.lm.evaluate import generate_left_padded, greedy_generate, score_predictions, task_accuracy

    if not samples:
        return {}, {}
    longest = max(len(tokenizer(" " + s.response, add_special_tokens=False)["input_ids"]) for s in samples) + 2
    n_new = min(longest, max_new_tokens) if max_new_tokens else longest
    gen = generate_left_padded if left_padded else greedy_generate
    preds = gen(model, tokenizer, [s.prompt for s in samples], max_new_tokens=n_new, batch_size=batch_size)
    refs = [s.response for s in samples]
    exact = score_predictions(preds, refs, metric="exact")
    primary = np.array([score_predictions([p], [r], metric=metric[s.task])[0] if metric[s.task] != "exact" else e
                        for p, r, s, e in zip(preds, refs, samples, exact)])
    return task_accuracy(samples, primary), task_accuracy(samples, exact)


class StageScores(TrainHook):
    """At each stage end, scores ``sets`` (name -> samples) into ``record`` (``record.<name>``)."""

    def __init__(self, record: RunRecord, sets: dict[str, list], *, data: SeedData, cfg: StudyConfig):
        self.record, self.sets, self.data, self.cfg = record, sets, data, cfg

    def on_step_end(self, state):
        if state.stage_step != state.stage_steps:
            return
        was = state.model.training
        state.model.eval()
        for name, samples in self.sets.items():
            prim, exact = score_sets(state.model, state.tokenizer, samples, metric=self.data.metric,
                                     max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.eval_batch_size,
                                     left_padded=self.cfg.data_source == "hf")
            getattr(self.record, name).append(prim)
            if name == "test":
                self.record.test_exact.append(exact)
        state.model.train(was)


def owner_vector(policy) -> torch.Tensor | None:
    """The policy's int8 owner vector ``(n,)`` over all parameters (-1 free), or ``None``."""
    own = getattr(policy, "_owner_flat", None)
    if own is None:
        return None
    return own.to_int8() if hasattr(own, "to_int8") else own


class ProtectionProbe(TrainHook):
    """Diagnostics: tokens trained, and which share of the elements a policy owned for stage-0 tasks
    at the first stage-1 step changed during stage 1 (placed after the policy in the hook list)."""

    def __init__(self, record: RunRecord, policy, stage0_labels: Sequence[str]):
        self.record, self.policy = record, policy
        self.ids = [policy.tasks.index(t) for t in stage0_labels if t in policy.tasks]
        self.theta = self.owned = None

    def update_mask(self, state):
        own = owner_vector(self.policy) if state.stage == 1 and self.theta is None else None
        if own is not None:
            self.theta = torch.cat([p.detach().reshape(-1) for p in state.named_params.values()]).clone()
            self.owned = torch.isin(own, torch.tensor(self.ids, dtype=own.dtype, device=own.device))
        return None

    def on_step_end(self, state):
        self.record.tokens += int((state.batch["labels"] != -100).sum())
        self.record.steps += 1

    def on_train_end(self, state):
        own = owner_vector(self.policy)
        if own is not None:
            self.record.protected_share = float((own != -1).float().mean())
        if self.theta is not None and bool(self.owned.any()):
            now = torch.cat([p.detach().reshape(-1) for p in state.named_params.values()])
            self.record.moved_owned_stage0 = float((now != self.theta)[self.owned].float().mean())


# ----------------------------------------------------------------------------- runs
def build_policy(method: str, *, data: SeedData, cfg: StudyConfig, ratio: float | None, ewc_lambda: float | None):
    """The isolation policy of ``method`` (``separate`` / ``replay`` train with ``full_sft``)."""
    name = "full_sft" if method in ("separate", "replay") else method
    kw = dict(tasks=list(data.labels), isolation_ratio=ratio if ratio is not None else 0.0)
    if name in ("static_cpi", "static_grad", "importance_after_stage", "ewc"):
        kw["probe_data"] = data.probe
    if name == "static_cpi":
        kw.update(probe_steps=cfg.probe_steps, probe_lr=cfg.probe_lr)
    if name in ("epi", "epi_replay", "epi_frozen"):
        kw.update(mask_update_interval=cfg.mask_update_interval, warmup_steps=cfg.warmup_steps, beta=cfg.ema_beta,
                  replay=data.replay)
    if name in ("random_mask", "random_after_stage"):
        kw["seed"] = data.seed
    if name == "ewc":
        kw.update(ewc_lambda=ewc_lambda, schedule="sequential")
    return make_policy(name, **kw)


def _autocast(cfg: StudyConfig, device: torch.device):
    if cfg.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_one(method: str, *, data: SeedData, base, cfg: StudyConfig, ratio: float | None = None,
            ewc_lambda: float | None = None, tuning: bool = False, checkpoint_dir=None) -> RunRecord:
    """Train one run from a copy of ``base`` = ``(model, tokenizer)``; ``tuning``: score the
    validation samples only (EWC's lambda), else the test and train-eval samples."""
    from epi_utils.workbench import runs

    runs.seed_everything(data.seed)
    model = copy.deepcopy(base[0])
    tok = base[1]
    stages = list(data.stages)
    if method == "separate":
        stages = [stages[-1]]
    elif method == "replay":
        stages = [stages[0], stages[1] + list(data.replay_samples)]
    rec = RunRecord(method=method, seed=data.seed, ratio=ratio, ewc_lambda=ewc_lambda, tuning=tuning,
                    stage_tasks=[tuple(t) for t in data.stage_tasks])
    policy = build_policy(method, data=data, cfg=cfg, ratio=ratio, ewc_lambda=ewc_lambda)
    sets = {"val": data.val} if tuning else {"test": data.test, "train": data.train_eval}
    hooks = [policy, ProtectionProbe(rec, policy, data.stage_tasks[0]), StageScores(rec, sets, data=data, cfg=cfg)]
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_steps=cfg.steps_per_stage, eval_every=0,
                       eval_train=False, seed=data.seed, warmup_ratio=0.05,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=cfg.steps_per_stage if checkpoint_dir else 0,
                       resume=False)
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    with _autocast(cfg, device):
        result = train_sft(model, tok, stages, config=tcfg, hooks=hooks, progress=False)
    rec.losses = [float(h["loss"]) for h in result.history]
    rec.seconds = time.perf_counter() - t0
    return rec


def final_score(rec: RunRecord, split: str = "test") -> float:
    """Mean score over every evaluated task after the last stage."""
    last = getattr(rec, split)[-1]
    return float(np.mean(list(last.values())))


_SHARED: dict = {}  # a worker's inputs (set once per process by _share)


def _share(base, data: dict, cfg: StudyConfig) -> None:
    _SHARED.update(base=base, data=data, cfg=cfg)


def _run_job(job: tuple) -> RunRecord:
    """One run of ``job = (method, seed, ratio, ewc_lambda, tuning, checkpoint_dir)`` on the inputs
    :func:`_share` gave this process."""
    method, seed, ratio, lam, tuning, ck = job
    return run_one(method, data=_SHARED["data"][seed], base=_SHARED["base"], cfg=_SHARED["cfg"], ratio=ratio,
                   ewc_lambda=lam, tuning=tuning, checkpoint_dir=ck)


def _run_jobs(jobs: list[tuple], *, base, data: dict, cfg: StudyConfig, desc: str) -> list[RunRecord]:
    """:func:`_run_job` over ``jobs`` in ``cfg.workers`` processes (``workbench.parallel``; the
    same records, in job order, as one process)."""
    from epi_utils.workbench.parallel import map_runs

    try:
        return map_runs(_run_job, jobs, workers=cfg.workers, threads=torch.get_num_threads(), init=_share,
                        initargs=(base, data, cfg), desc=desc)
    finally:
        _SHARED.clear()  # in one process, the inputs were shared with this one


def choose_ewc_lambda(*, data: SeedData, base, cfg: StudyConfig) -> tuple[float, list[dict], float]:
    """The ``ewc_lambdas`` candidate with the highest mean validation score after stage 1 (ties:
    the smaller lambda), the table of candidates, and the seconds the tuning runs took."""
    jobs = [("ewc", data.seed, None, lam, True, None) for lam in cfg.ewc_lambdas]
    recs = _run_jobs(jobs, base=base, data={data.seed: data}, cfg=cfg, desc="study 02 EWC lambda")
    table = [{"ewc_lambda": lam, "val_score": final_score(rec, "val")} for lam, rec in zip(cfg.ewc_lambdas, recs)]
    best = max(table, key=lambda r: (r["val_score"], -r["ewc_lambda"]))
    return best["ewc_lambda"], table, sum(rec.seconds for rec in recs)


def jobs(cfg: StudyConfig) -> list[tuple[str, float | None]]:
    """``(method, ratio)`` of every run of one seed: the bounds, then every masking policy x ratio."""
    return [(b, None) for b in cfg.bounds] + [(m, r) for m in cfg.methods for r in cfg.ratios]


def run_study(cfg: StudyConfig, *, world=None, base=None, data_files=None, checkpoint_root=None) -> StudyResult:
    """Every job of :func:`jobs` on every seed (EWC's lambda chosen first, on the first seed's
    validation samples), in ``cfg.workers`` processes. Prints one line per run in batch runs
    (``workbench.progress``)."""
    world = world if world is not None else study_world(cfg, data_files=data_files)
    if str(cfg.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model, tok, meta = base if base is not None else load_base(cfg, world)
    data = {s: seed_data(world, tok, cfg, s) for s in cfg.seeds}
    lam, tuning, tuning_s = None, [], 0.0
    if "ewc" in cfg.bounds:
        if len(cfg.ewc_lambdas) == 1:
            lam = cfg.ewc_lambdas[0]
        else:
            lam, tuning, tuning_s = choose_ewc_lambda(data=data[cfg.seeds[0]], base=(model, tok), cfg=cfg)
    todo = [(m, s, r, lam if m == "ewc" else None, False,
             None if checkpoint_root is None else f"{checkpoint_root}/{m}-{r}-{s}")
            for s in cfg.seeds for m, r in jobs(cfg)]
    records = _run_jobs(todo, base=(model, tok), data=data, cfg=cfg, desc="study 02 runs")
    return StudyResult(records=records, ewc_lambda=lam, ewc_tuning=tuning,
                       stage_tasks=data[cfg.seeds[0]].stage_tasks, pretrain=meta, tuning_seconds=tuning_s)
