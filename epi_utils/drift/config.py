"""The one configuration of study 01 (importance drift), built from the notebook's parameters.

``config_from_params(DriftConfig, globals())`` picks the fields below from the notebook's
parameters cell; ``__post_init__`` validates every one and names the parameter in its error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from epi_utils.importance.checkpoint import ESTIMATORS

PAIRS = ("all", "anchored")
ABLATIONS = ("zero", "reference")
NORMALIZATIONS = ("layer_mean", "layer_max", "none")


@dataclass(frozen=True)
class DriftConfig:
    """Design of study 01 (see ``notebooks/01_importance_drift.ipynb`` for what each field means).

    Regimes: ``sft`` at ``sft_lr`` (the main question: fine-tuning rates) and ``high_lr`` at
    ``high_lr`` (comparison; ``high_lr = 0`` drops it). Runs: every regime x pretraining seed x SFT
    seed (``seed, seed + 1, ..., seed + n_seeds - 1``); intervals are over these runs.
    """

    profile: str = "cpu"
    seed: int = 0
    device: str = "auto"
    model: str = "tiny"
    pretrain: bool = True
    world_facts: str = "synthetic"
    pretrain_seeds: list[int] = field(default_factory=lambda: [0, 1])
    n_seeds: int = 2
    samples_per_task: int = 0
    steps: int = 200
    batch_size: int = 16
    sft_lr: float = 2e-4
    high_lr: float = 1e-2
    checkpoints: list[int] = field(default_factory=lambda: [0, 20, 50, 100, 200])
    top_shares: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.2])
    headline_share: float = 0.05
    estimators: list[str] = field(default_factory=lambda: list(ESTIMATORS))
    probe_batch: int = 8
    normalize: str = "layer_mean"
    pairs: str = "all"
    spearman_sample: int = 20000
    ablate_share: float = 0.01
    ablation: str = "zero"
    planted_min_d: float = 0.8
    null_margin: float = 0.1
    rehearse: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> None:
            raise ValueError(f"parameter {name} must be {allowed}, got {getattr(self, name)!r}")

        def pos_int(name: str, lo: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                bad(name, f"an int >= {lo}")

        for name in ("n_seeds", "steps", "batch_size", "probe_batch", "spearman_sample"):
            pos_int(name)
        pos_int("seed", 0)
        pos_int("samples_per_task", 0)
        if 0 < self.samples_per_task < 4:
            bad("samples_per_task", "0 (all) or >= 4 (four disjoint quarters for the no-drift control)")
        if self.world_facts not in ("synthetic", "real"):
            bad("world_facts", "'synthetic' or 'real'")
        if not self.pretrain_seeds or len(set(self.pretrain_seeds)) != len(self.pretrain_seeds) or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.pretrain_seeds):
            bad("pretrain_seeds", "a non-empty list of distinct non-negative ints")
        if self.model != "tiny" and list(self.pretrain_seeds) != [0]:
            bad("pretrain_seeds", f"[0] for model {self.model!r} (only 'tiny' is pretrained here, per seed)")
        if not (self.sft_lr > 0):
            bad("sft_lr", "> 0")
        if not (self.high_lr >= 0):
            bad("high_lr", ">= 0 (0 drops the high-lr regime)")
        ck = list(self.checkpoints)
        if len(ck) < 2 or ck != sorted(set(ck)) or ck[0] < 0 or ck[-1] > self.steps:
            bad("checkpoints", f"at least two increasing distinct steps in [0, steps={self.steps}]")
        if any(isinstance(c, bool) or not isinstance(c, int) for c in ck):
            bad("checkpoints", "a list of ints")
        sh = list(self.top_shares)
        if not sh or any(not (0 < s < 1) for s in sh) or sh != sorted(set(sh)):
            bad("top_shares", "increasing distinct shares in (0, 1)")
        if self.headline_share not in sh:
            bad("headline_share", f"one of top_shares {sh}")
        if not self.estimators or any(e not in ESTIMATORS for e in self.estimators) or len(set(self.estimators)) != len(
                self.estimators):
            bad("estimators", f"a non-empty list of distinct names from {ESTIMATORS}")
        if "taylor" not in self.estimators:
            bad("estimators", "a list containing 'taylor' (the headline and the functional test use it)")
        if self.normalize not in NORMALIZATIONS:
            bad("normalize", f"one of {NORMALIZATIONS}")
        if self.pairs not in PAIRS:
            bad("pairs", f"one of {PAIRS}")
        if not (0 < self.ablate_share <= max(sh)):
            bad("ablate_share", f"in (0, max(top_shares)={max(sh)}]")
        if self.ablation not in ABLATIONS:
            bad("ablation", f"one of {ABLATIONS}")
        if not (0 < self.planted_min_d < 1):
            bad("planted_min_d", "in (0, 1)")
        if not (0 < self.null_margin < self.planted_min_d):
            bad("null_margin", f"in (0, planted_min_d={self.planted_min_d})")

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
        """What the intervals are over, e.g. ``"runs (2 pretraining seeds x 2 SFT seeds)"``."""
        p = len(self.pretrain_seeds)
        return (f"runs ({p} pretraining seed{'s' if p > 1 else ''} x {self.n_seeds} SFT "
                f"seed{'s' if self.n_seeds > 1 else ''})")
