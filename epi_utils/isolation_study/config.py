"""Study 02's settings: one frozen dataclass whose fields declare their default and help text once.

The notebook's parameters cell is generated from :class:`Config` (``epi params
notebooks/02_epi_vs_static.ipynb --sync``); its defaults are the ``cpu`` profile.
"""
from __future__ import annotations

import dataclasses

from epi_utils.data.world import TASKS as WORLD_TASKS
from epi_utils.isolation_study.hf_data import HF_TASKS
from epi_utils.workbench.contract import StudyConfig, option

#: masking policies that can sit on the frontier (every one takes ``isolation_ratio``)
MASKED = ("static_cpi", "static_grad", "random_mask", "epi", "epi_replay", "epi_frozen", "cpi_after_stage",
          "importance_after_stage", "random_after_stage")
#: reference rows of every table: floor, retention ceiling, standard continual-learning reference, regulariser
BOUNDS = ("full_sft", "separate", "replay", "ewc")
#: sizes of the ``tiny`` GPT-2 builder (``epi_utils.lm.models.TinyModelConfig`` fields)
MODEL_SIZES = {"default": dict(n_layer=4, n_head=4, n_embd=128),   # ~0.9M parameters
               "small": dict(n_layer=6, n_head=8, n_embd=256)}     # ~4.9M parameters
DATA_SOURCES = ("world", "hf")
DESIGNS = ("mixed", "two_stage")
#: arms of the mixed design (issue 26): floor, ceiling, CPI-FT as its paper runs it, EPI, EPI frozen after its
#: warmup (the ablation of "evolving"), random masks on EPI's schedule
ARMS = ("full_sft", "separate", "cpi_ft", "epi", "epi_warmup_frozen", "random_refresh")
RATIO_ARMS = ("cpi_ft", "epi", "epi_warmup_frozen", "random_refresh")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Every setting of study 02: the mixed multi-task design (default) or the two-stage one."""

    design: str = option("mixed", "mixed: one mixed multi-task SFT run over every task (issue 26) | two_stage: "
                                  "sequential stages (the earlier design)", choices=DESIGNS)
    n_seeds: int = option(3, "seeds per arm (data sampling, batch order, random masks)", ge=1)
    model: str = option("tiny", "tiny (GPT-2 pretrained here on the world) | smollm2 | HF id")
    model_size: str = option("default", "tiny builder size: small (4.9M parameters) | default (0.9M)",
                             choices=tuple(MODEL_SIZES))
    pretrain: bool = option(True, "tiny: pretrain once on the world corpus (cached); False: random init (smoke)")
    pretrain_seed: int = option(0, "tiny: seed of the (first) pretraining run", ge=0)
    n_pretrain_seeds: int = option(3, "mixed, tiny: seed s starts from the model pretrained with seed "
                                      "pretrain_seed + (s mod n_pretrain_seeds)", ge=1)
    pretrain_epochs: int = option(40, "tiny: pretraining epochs over the corpus", ge=1)
    pretrain_lr: float = option(0.003, "tiny: pretraining peak learning rate", gt=0)
    data_source: str = option("world", "world (synthetic tasks) | hf (GSM8K, CodeAlpaca, Alpaca via datasets)",
                              choices=DATA_SOURCES)
    world_seed: int = option(0, "seed of the synthetic world (facts, corpus, sample pool)", ge=0)
    world_tasks: tuple[str, ...] = option(["reversal", "sorting", "key_lookup", "format_conversion"],
                                          "world tasks (two_stage: first half stage 0, rest stage 1)",
                                          choices=WORLD_TASKS, nonempty=True, unique=True)
    n_train_per_task: int = option(128, "world: train samples per task and seed", ge=1)
    n_val_per_task: int = option(100, "world: validation samples per task (tuning)", ge=0)
    n_test_per_task: int = option(100, "world: held-out test samples per task (the primary measure)", ge=1)
    n_train_eval_per_task: int = option(32, "train samples per task scored for memorisation (secondary)", ge=0)
    interference_rate: float = option(0.0, "share of stage-0 prompts re-trained in stage 1 with other answers "
                                           "(own label)", ge=0, le=1)
    hf_tasks: tuple[str, ...] = option(["gsm8k", "codealpaca"], "data_source hf: stage 0 then stage 1 data sets",
                                       choices=tuple(HF_TASKS), nonempty=True, unique=True)
    hf_n_train: int = option(2000, "hf: train examples per task", ge=1)
    hf_n_val: int = option(100, "hf: validation examples per task", ge=0)
    hf_n_test: int = option(200, "hf: test examples per task", ge=1)
    hf_max_response_words: int = option(256, "hf: free-form targets cut to this many words (GSM8K kept whole)",
                                        ge=1)
    methods: tuple[str, ...] = option(["cpi_after_stage", "importance_after_stage", "random_after_stage",
                                       "epi_replay", "epi_frozen"], "masking policies on the frontier",
                                      choices=MASKED, unique=True)
    bounds: tuple[str, ...] = option(list(BOUNDS), "reference arms of every table (full_sft, the floor, always)",
                                     choices=BOUNDS, unique=True)
    ratios: tuple[float, ...] = option([0.05], "isolation ratios of the frontier (cpu: 5% only, inside its 15-minute "
                                       "budget; cpu-long: 1, 5, 20, 50%)", gt=0, lt=1,
                                       nonempty=True, unique=True)
    arms: tuple[str, ...] = option(list(ARMS), "mixed: arms of the grid (full_sft, the floor, always)",
                                   choices=ARMS, unique=True)
    lr_grid: tuple[float, ...] = option([0.001, 0.003],
                                        "mixed: learning rates tried per arm on the validation split", gt=0,
                                        nonempty=True, unique=True)
    epi_lr_grid: tuple[float, ...] = option([0.003], "mixed: EPI's learning rates, each with every "
                                            "(interval, warmup) pair: as many tuning runs as lr_grid", gt=0,
                                            nonempty=True, unique=True)
    epi_intervals: tuple[int, ...] = option([20, 50], "mixed: EPI's candidate mask-update intervals (paired "
                                            "with epi_warmups)", ge=1, nonempty=True)
    epi_warmups: tuple[int, ...] = option([20, 50], "mixed: EPI's candidate warmups (steps before the first "
                                          "mask), one per interval", ge=0, nonempty=True)
    tune_ratio: float = option(0.2, "mixed: isolation ratio of the tuning runs", gt=0, lt=1)
    equivalence_margin: float = option(0.03, "mixed: equivalence margin of the TOST (score units; fixed before "
                                             "the run)", gt=0, lt=1)
    capacity_seeds: int = option(0, "mixed: seeds of the capacity check (each task trained with only its critical "
                                    "set trainable, per ratio; checks.py); 0: not run", ge=0)
    forgetting_seeds: int = option(0, "mixed: seeds of the two-stage forgetting table with plain EPI and EPI frozen "
                                      "(checks.py); 0: not run", ge=0)
    steps_per_stage: int = option(400, "optimizer steps per stage, the same for every arm (mixed: of the one "
                                       "mixed run; separate: split evenly over the tasks)", ge=1)
    lr: float = option(0.0003, "two_stage: fine-tuning peak learning rate", gt=0)
    batch_size: int = option(16, "samples per task-homogeneous step", ge=1)
    mask_update_interval: int = option(10, "EPI: steps between mask refreshes", ge=1)
    warmup_steps: int = option(10, "EPI: steps before the first mask", ge=0)
    ema_beta: float = option(0.9, "EPI: EMA factor of per-task importance", ge=0, lt=1)
    probe_batches: int = option(2, "batches per task for probe-based masks and EWC's Fisher", ge=1)
    probe_steps: int = option(10, "static_cpi: probe fine-tune steps per task", ge=1)
    probe_lr: float = option(0.0003, "static_cpi: probe fine-tune learning rate", gt=0)
    replay_batches: int = option(4, "EPI: replay batches per finished task (gradients only, never trained)", ge=1)
    replay_samples: int = option(8, "replay bound: stored stage-0 samples per task, trained in stage 1", ge=0)
    ewc_lambdas: tuple[float, ...] = option([1000000.0, 100000000.0, 10000000000.0],
                                            "EWC penalty candidates, chosen on the validation split "
                                            "(smaller ones left full SFT unchanged)", ge=0, unique=True)
    max_new_tokens: int = option(0, "cap on generated tokens (0: longest reference + 2)", ge=0)
    eval_batch_size: int = option(64, "generation batch", ge=1)
    bf16: bool = option(False, "cuda: bf16 autocast (TF32 matmuls are on whenever the device is cuda)")
    checkpoint_runs: bool = option(False, "save each run's model at each stage end in the run folder (gpu)")
    torch_threads: int = option(1, "intra-op threads; 0 keeps the torch default", ge=0)
    workers: int = option(2, "processes running the runs side by side (CPU; each with torch_threads threads; "
                             "same results as 1)", ge=1)
    executor: str = option("local", "where the grid's runs go: local processes, a Ray cluster or SLURM (submitit)",
                           choices=("local", "ray", "slurm"))
    executor_address: str = option("", "ray: address of an existing cluster (auto or ray://host:10001); "
                                       "empty starts a local one")
    executor_partition: str = option("", "slurm: partition of the runs' jobs")
    executor_time: str = option("", "slurm: time limit per run (HH:MM:SS); empty keeps the default")
    executor_gpus: float = option(0.0, "ray or slurm: GPUs per run", ge=0)

    def executor_options(self) -> dict:
        """Backend options of :func:`epi_utils.workbench.executors.map_jobs` for ``executor``."""
        if self.executor == "ray":
            return {"address": self.executor_address or None, "gpus": self.executor_gpus}
        if self.executor == "slurm":
            return {"partition": self.executor_partition or None, "time": self.executor_time or None,
                    "gpus": int(self.executor_gpus)}
        return {}

    def check(self) -> None:
        if self.design == "mixed":
            if "full_sft" not in self.arms:
                raise self.error("arms", "must contain 'full_sft' (the floor every comparison is paired with)")
            if len(self.epi_intervals) != len(self.epi_warmups):
                raise self.error("epi_warmups", f"needs one warmup per interval ({len(self.epi_intervals)})")
            if len(self.epi_lr_grid) * len(self.epi_intervals) != len(self.lr_grid):
                raise self.error("epi_lr_grid", "x epi_intervals must give as many tuning runs as lr_grid "
                                                f"({len(self.lr_grid)}): the same tuning budget for every arm")
            if self.capacity_seeds > self.n_seeds:
                raise self.error("capacity_seeds", f"must be at most n_seeds ({self.n_seeds})")
            if self.forgetting_seeds > self.n_seeds:
                raise self.error("forgetting_seeds", f"must be at most n_seeds ({self.n_seeds})")
            if self.steps_per_stage < len(self.tasks):
                raise self.error("steps_per_stage", f"must give each of the {len(self.tasks)} tasks a step")
        if "full_sft" not in self.bounds:
            raise self.error("bounds", "must contain 'full_sft' (the floor every comparison is paired with)")
        if "ewc" in self.bounds and not self.ewc_lambdas:
            raise self.error("ewc_lambdas", "needs at least one penalty when the ewc bound is run")
        if ("ewc" in self.bounds and len(self.ewc_lambdas) > 1 and self.n_val_per_task < 1
                and self.data_source == "world"):
            raise self.error("n_val_per_task", "must be >= 1 when EWC's lambda is chosen on the validation split")
        if "replay" in self.bounds and self.replay_samples < 1:
            raise self.error("replay_samples", "must be >= 1 when the replay bound is run")
        if self.workers > 1 and self.device.startswith("cuda") and self.executor == "local":
            raise self.error("workers", "must be 1 on cuda with the local executor (worker processes are for CPU "
                                        "cores; on ray or slurm each run asks for executor_gpus)")
        if self.executor == "local" and (self.executor_address or self.executor_partition or self.executor_time
                                         or self.executor_gpus):
            raise self.error("executor", "is local, so executor_address/partition/time/gpus do not apply")
        if len(self.tasks) < 2:
            raise self.error("world_tasks" if self.data_source == "world" else "hf_tasks",
                             "needs at least two tasks (stage 0 | stage 1)")

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of the runs: ``seed, seed + 1, ..., seed + n_seeds - 1``."""
        return tuple(range(self.seed, self.seed + self.n_seeds))

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks of the data source in schedule order."""
        return self.world_tasks if self.data_source == "world" else self.hf_tasks
