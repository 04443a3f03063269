"""The one configuration of study 03 (the Incomplete Learning Phenomenon).

Every field is declared once, with its default (= the ``cpu`` profile the published run used) and
its help text; the notebook's parameters cell is generated from it (``epi params
notebooks/03_ilp_taxonomy.ipynb --sync``) and validated by :mod:`epi_utils.workbench.contract`.
"""
from __future__ import annotations

from dataclasses import dataclass

from epi_utils.data.world import TASKS
from epi_utils.workbench.contract import StudyConfig, option

BACKENDS_NAMED = ("tiny", "smollm2")   # any other value is a Hugging Face id / local folder (real facts)
PROBE_FORMATS = ("raw", "sft")


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every setting of one run of study 03; seed k builds world k and pretrains the tiny model with seed k."""

    n_seeds: int = option(3, "worlds of the default design (each with its own pretraining, replay draw and SFT "
                             "order; the forest is fitted on them)", ge=1)
    threads: int = option(1, "torch CPU threads per worker, 0 keeps the torch default", ge=0)
    workers: int = option(2, "worlds run in parallel processes (one per CPU core)", ge=1)
    backend: str = option("tiny", "tiny (GPT-2 pretrained on each world's corpus) | smollm2 | a Hugging Face "
                                  "model id (real facts)")
    # world (each seed builds its own world and pretrains its own tiny model)
    n_entities: int = option(50, "entities of the world, each with 5 attribute facts", ge=1)
    tasks: tuple[str, ...] = option(["reversal", "fact_qa"], "tasks in schedule order, split into stages "
                                    "(stage 0: reversal, stage 1: fact QA)", choices=TASKS, nonempty=True)
    n_stages: int = option(2, "stages of the sequential SFT schedule", ge=1)
    n_train_per_task: int = option(230, "SFT training samples per task (the main prompt form holds at least 200 "
                                        "of them)", ge=1)
    n_heldout_per_task: int = option(10, "held-out samples per task", ge=0)
    pretrain_fact_fraction: float = option(0.75, "share of the world's facts stated in the pretraining corpus",
                                           ge=0, le=1)
    missing_knowledge_rate: float = option(0.2, "share of fact-QA samples about facts absent from pretraining",
                                           ge=0, le=1)
    conflict_rate: float = option(0.2, "share of fact-QA samples whose target contradicts the corpus", ge=0, le=1)
    inconsistency_rate: float = option(0.12, "share of a task's samples in same-prompt pairs with different "
                                             "targets", ge=0, le=1)
    rare_complex_rate: float = option(0.1, "share of a task's samples in rare prompt forms with long outputs",
                                      ge=0, le=1)
    paraphrase_share: float = option(0.0, "share of fact-QA inconsistency pairs whose second copy asks the fact in "
                                          "other words (0: exact duplicate prompts only)", ge=0, le=1)
    pretrain_epochs: int = option(25, "tiny: pretraining epochs on the world's corpus (cached per world and seed)",
                                  ge=1)
    # SFT
    replay: float = option(0.25, "share of earlier-stage samples replayed in later stages (< 1: forgetting can "
                                 "happen)", ge=0, le=1)
    knowledge_mix: float = option(1.0, "share of the corpus' facts mixed into every SFT stage as pretraining data "
                                       "(cloze form)", ge=0, le=1)
    sft_lr: float = option(0.003, "SFT learning rate (constant)", gt=0)
    sft_batch_size: int = option(16, "SFT batch size", ge=1)
    max_epochs: float = option(40.0, "SFT epochs per stage at most", gt=0)
    eval_every: int = option(40, "steps between dynamics checkpoints (and convergence checks)", ge=1)
    converge_share: float = option(0.95, "a stage converges when this share of its clean samples is reproduced, "
                                         "0 trains max_epochs", ge=0, le=1)
    converge_on: str = option("plateau", "plateau (share of all own samples reproduced stops rising: reads no "
                                         "planted label) | clean (planted-clean samples reach converge_share: "
                                         "reads the plan, kept for comparison)", choices=("clean", "plateau"))
    plateau_patience: int = option(2, "plateau: checks without a rise before a stage stops", ge=1)
    plateau_min_delta: float = option(0.02, "plateau: smallest rise of the reproduced share that counts", ge=0, le=1)
    # held-out settings (issue 28)
    n_settings: int = option(3, "extra worlds from the settings family (held out from every fit of the "
                                "diagnosis), beside the n_seeds worlds of the default design", ge=0)
    settings_seed: int = option(100, "seed of the settings family draw", ge=0)
    settings_cold: bool = option(False, "family may change the base model (new world seeds, more entities with "
                                        "fewer pretrained facts, shorter pretraining): pretrains new models")
    # signals and diagnosis
    probe_format: str = option("raw", "how the base model reads a prompt in the probe: raw text | sft (with the "
                                      "SFT separator)", choices=PROBE_FORMATS)
    min_known_share: float = option(0.2, "probe: share of a prompt form the base model must know for the probe "
                                         "to apply", ge=0, le=1)
    conflict_quantile: float = option(0.1, "probe: conflict if the base answer is at least this quantile of "
                                           "confidence on known prompts", ge=0, le=1)
    similarity_threshold: float = option(0.95, "char 3-gram Jaccard for near-duplicate prompts", gt=0)
    template_df: float = option(0.5, "rarity: template words are in at least this share of the task's prompts",
                                ge=0, le=1)
    rare_max_ratio: float = option(0.25, "rarity: a prompt form at most this share of the task's dominant form "
                                         "is rare", ge=0, le=1)
    complex_min_len_z: float = option(3.0, "complexity: target-length z-score within the task", gt=0)
    diagnoser: str = option("forest", "the study's diagnosis (tables, mitigation, card): forest (random forest on "
                                      "the signals, fitted only on other worlds: leave-one-world-out on the default "
                                      "design, the default design for held-out settings; their truth is its "
                                      "training data) | cascade (the rule cascade, reported beside it anyway)",
                            choices=("forest", "cascade"))
    cuts: str = option("adaptive", "rarity/complexity cuts: adaptive (from each data set's own distribution) | "
                                   "fixed (rare_max_ratio, mean/sd z)", choices=("adaptive", "fixed"))
    # mitigation
    mitigate: bool = option(True, "run the mitigation interventions")
    mit_steps: int = option(40, "optimizer steps per intervention arm (fix and control alike)", ge=1)
    mit_batch_size: int = option(16, "rows per intervention step", ge=1)
    mit_lr: float = option(0.001, "intervention learning rate (constant)", gt=0)
    mit_fix_share: float = option(0.5, "share of each fix batch drawn from the fix's focus rows", ge=0, le=1)
    mit_replay_buffer: int = option(32, "random earlier-stage samples added to the forgetting fix", ge=0)
    explorer_rows: int = option(30, "rows of the explorer table", ge=1)

    def check(self) -> None:
        if not self.backend.strip():
            raise self.error("backend", f"must be one of {list(BACKENDS_NAMED)} or a Hugging Face model id")
        if self.replay >= 1.0 and self.n_stages > 1:
            raise self.error("replay", "must be < 1 with several stages (forgetting needs stage-0 samples that are "
                                       "not replayed)")
        if self.rehearse and self.tiny_backend:
            raise self.error("rehearse", "the rehearsal is for a real LLM backend (gpu profile), not the tiny one")

    @property
    def tiny_backend(self) -> bool:
        """The synthetic-world GPT-2 pretrained here (else real facts and a real model)."""
        return self.backend == "tiny"

    @property
    def seeds(self) -> list[int]:
        """``seed, seed + 1, ...``: one world per seed."""
        return list(range(self.seed, self.seed + self.n_seeds))
