"""The one configuration of study 01 (importance drift).

Every field is declared once, with its default and help text (:func:`~epi_utils.workbench.contract.option`);
the notebook's parameters cell is generated from it (``epi params notebooks/01_importance_drift.ipynb --sync``).
The defaults are the ``cpu`` profile. Single-field checks are option checks; the rules across
fields are in :meth:`Config.check`. Errors have the contract's one format
(``"Config.<field>: <problem> (got <value>)"``).
"""
from __future__ import annotations

from dataclasses import dataclass

from epi_utils.importance.checkpoint import ESTIMATORS
from epi_utils.workbench.contract import StudyConfig, option

PAIRS = ("all", "anchored")
SCHEDULES = ("cosine", "constant")
ABLATIONS = ("zero", "reference")
NORMALIZATIONS = ("layer_mean", "layer_max", "none")


@dataclass(frozen=True)
class Config(StudyConfig):
    """Design of study 01 (see ``notebooks/01_importance_drift.ipynb`` for what each field means).

    Regimes: ``sft`` at ``sft_lr`` (the main question: fine-tuning rates) and ``high_lr`` at
    ``high_lr`` (comparison; ``high_lr = 0`` drops it), each under every learning-rate schedule of
    ``schedules`` (cosine decay, and a constant rate that tells "settled" from "the rate decayed").
    Runs: every regime x schedule x pretraining seed x SFT seed (``seed, ..., seed + n_seeds - 1``).
    The unit of every interval is the **pretrained model** (one per pretraining seed): SFT seeds are
    nested within a model and averaged before the interval (issue 27).
    """

    model: str = option("tiny", "epi_utils.lm.models.load_model name: tiny | smollm2 | HF id")
    pretrain: bool = option(True, "tiny: pretrain on the world corpus (cached per pretraining seed); False: random init")
    world_facts: str = option("synthetic", "synthetic | real (real-world facts, for a real pretrained model)",
                              choices=("synthetic", "real"))
    pretrain_seeds: list[int] = option([0, 1, 2, 3, 4], "tiny's pretraining seeds, each an independently pretrained "
                                       "model (the unit of every interval); other models: [0]",
                                       ge=0, lt=2**31, nonempty=True, unique=True)
    n_seeds: int = option(1, "SFT seeds per pretrained model (nested: averaged within the model)", ge=1)
    samples_per_task: int = option(0, "training samples per task used for SFT and importance; 0 keeps all", ge=0)
    steps: int = option(200, "optimizer steps of mixed multi-task SFT per run", ge=1)
    batch_size: int = option(16, "samples per (task-homogeneous) SFT step", ge=1)
    sft_lr: float = option(0.0002, "peak learning rate of the main, SFT-like regime", gt=0)
    high_lr: float = option(0.0, "peak learning rate of the comparison regime (the old study's 0.01 in the "
                            "cpu-long profile); 0 drops it", ge=0)
    schedules: list[str] = option(list(SCHEDULES), "learning-rate schedules after warmup: cosine decay and/or "
                                  "constant", choices=SCHEDULES, nonempty=True, unique=True)
    checkpoints: list[int] = option([0, 20, 50, 100, 200], "steps at which importance is measured; step 0 is the "
                                    "model before SFT", ge=0, unique=True)
    top_shares: list[float] = option([0.01, 0.05], "top shares p of importance compared (Jaccard, RBO)",
                                     gt=0, lt=1, nonempty=True, unique=True)
    headline_share: float = option(0.05, "share of the headline drift index (one of top_shares)", gt=0, lt=1)
    estimators: list[str] = option(["taylor", "magnitude"], "sum |theta g| (headline), sum g^2 (fisher), |theta| "
                                   "(gradient-free control)",
                                   choices=ESTIMATORS, nonempty=True, unique=True)
    probe_batch: int = option(8, "samples per micro-batch of the importance sums", ge=1)
    normalize: str = option("layer_mean", "layer-wise normalisation of scores: layer_mean | layer_max | none",
                            choices=NORMALIZATIONS)
    pairs: str = option("all", "checkpoint pairs: all (every t < s) | anchored (first and previous only; bounded "
                        "memory)", choices=PAIRS)
    spearman_sample: int = option(20000, "parameter positions sampled for Spearman rank correlation", ge=1)
    ablate_share: float = option(0.01, "share of parameters ablated in the dose-response test (the top masks "
                                 "of every checkpoint and random masks)", gt=0, lt=1)
    ablation: str = option("zero", "functional test: zero the masked elements | reference (reset to their value "
                           "before SFT)", choices=ABLATIONS)
    planted_min_d: float = option(0.8, "the planted-drift control passes when D's interval lies above this",
                                  gt=0, lt=1)
    null_margin: float = option(0.1, "the no-drift control (two independent splits at one checkpoint) passes when "
                                "D's interval lies within plus/minus this margin", gt=0, lt=1)
    torch_threads: int = option(0, "intra-op threads; 0 keeps the torch default", ge=0)

    def check(self) -> None:
        if 0 < self.samples_per_task < 2:
            raise self.error("samples_per_task", "must be 0 (all) or >= 2 (two disjoint halves)")
        if self.model != "tiny" and list(self.pretrain_seeds) != [0]:
            raise self.error("pretrain_seeds", f"must be [0] for model {self.model!r} (only 'tiny' is pretrained "
                             "here, per seed)")
        ck = list(self.checkpoints)
        if len(ck) < 2 or ck != sorted(ck) or ck[-1] > self.steps:
            raise self.error("checkpoints", f"must be at least two increasing steps in [0, steps={self.steps}]")
        if list(self.top_shares) != sorted(self.top_shares):
            raise self.error("top_shares", "must be increasing")
        if self.headline_share not in self.top_shares:
            raise self.error("headline_share", f"must be one of top_shares {list(self.top_shares)}")
        if "taylor" not in self.estimators:
            raise self.error("estimators", "must contain 'taylor' (the headline and the functional test use it)")
        if self.ablate_share > max(self.top_shares):
            raise self.error("ablate_share", f"must be <= max(top_shares) = {max(self.top_shares)}")
        if self.null_margin >= self.planted_min_d:
            raise self.error("null_margin", f"must be < planted_min_d = {self.planted_min_d}")

    @property
    def regimes(self) -> list[tuple[str, float]]:
        """``[("sft", sft_lr), ("high_lr", high_lr)]`` (the second only when ``high_lr > 0``)."""
        out = [("sft", float(self.sft_lr))]
        if self.high_lr > 0:
            out.append(("high_lr", float(self.high_lr)))
        return out

    @property
    def sft_seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.n_seeds)]

    @property
    def unit(self) -> str:
        """What the intervals are over: ``"pretrained models"`` (their number is each interval's n;
        :attr:`design` says how many SFT seeds each one averages)."""
        return "pretrained models"

    @property
    def design(self) -> str:
        """``"5 pretrained models x 1 SFT seed each"``: the nesting the intervals are over."""
        p = len(self.pretrain_seeds)
        return (f"{p} pretrained model{'s' if p > 1 else ''} x {self.n_seeds} SFT seed{'s' if self.n_seeds > 1 else ''}"
                f" each")
