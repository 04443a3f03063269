"""Study 05's one configuration object, built from the notebook's parameters with
``epi_utils.workbench.params.config_from_params(ACDConfig, globals(), device=...)``.

Field names equal the notebook's parameter names (the parameters cell documents each one); the
defaults here are only for library callers and tests -- the notebook's defaults (= the cpu profile)
are what a run uses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from epi_utils.acd.data import DATASETS

_SETTING = re.compile(r"^(\d+)way(\d+)shot$")
ENCODERS = ("cnn", "minilm", "bert")


def parse_setting(name: str) -> tuple[int, int]:
    """``"5way10shot" -> (5, 10)``; raises ``ValueError`` naming the allowed form."""
    m = _SETTING.match(str(name))
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 1:
        raise ValueError(f"setting must look like '5way5shot' (N >= 2 ways, K >= 1 shots), got {name!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class ACDConfig:
    """Validated parameters of Study 05 (multi-label few-shot ACD, Hu et al. 2021).

    Training protocol: ``train_episodes`` episodes per epoch, at most ``max_epochs`` epochs, early
    stopping when the mean episode AUC on ``val_episodes`` validation episodes has not improved for
    ``patience`` epochs (the best epoch's weights are restored). ``shared_training``: one model per
    (architecture, seed) on episodes cycling through every setting's (N, K); else one model per
    setting, as in the paper.
    """

    settings: list[str]
    seed: int = 0
    n_seeds: int = 5
    n_query: int = 5
    train_episodes: int = 800
    max_epochs: int = 30
    patience: int = 3
    val_episodes: int = 100
    test_episodes: int = 600
    transfer_test_episodes: int = 600
    eval_datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    protocol: str = "auto"
    encoder: str = "cnn"
    model_id: str = "bert-base-uncased"
    hidden: int = 64
    attn_dim: int = 32
    dropout: float = 0.1
    lr: float = 3e-3
    policy_epochs: int = 5
    policy_sigma: float = 0.5
    policy_lr: float = 1e-2
    shared_training: bool = False
    device: str = "cpu"
    num_threads: int = 1
    rehearse: bool = False

    def __post_init__(self):
        if not self.settings:
            raise ValueError("settings must list at least one 'NwayKshot' setting")
        for s in self.settings:
            parse_setting(s)
        if len(set(self.settings)) != len(self.settings):
            raise ValueError(f"settings has duplicates: {self.settings}")
        bad = [d for d in self.eval_datasets if d not in DATASETS]
        if bad or not self.eval_datasets:
            raise ValueError(f"eval_datasets must be a non-empty list among {DATASETS}, got {self.eval_datasets}")
        if self.protocol not in ("auto", "transfer"):
            raise ValueError(f"protocol must be 'auto' or 'transfer', got {self.protocol!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        for name in ("n_seeds", "n_query", "train_episodes", "max_epochs", "patience", "val_episodes",
                     "test_episodes", "transfer_test_episodes", "hidden", "attn_dim", "policy_epochs", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "policy_sigma", "policy_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def seeds(self) -> list[int]:
        """``seed, seed + 1, ..., seed + n_seeds - 1``."""
        return [self.seed + i for i in range(self.n_seeds)]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(n_way, k_shot)`` of each setting, in order."""
        return [parse_setting(s) for s in self.settings]
