"""Study 05's configuration: one frozen :class:`~epi_utils.workbench.contract.StudyConfig`.

Every field is declared once, with its default and help text, by ``option``; the notebook's
parameters cell is generated from it (``epi params notebooks/05_fewshot_acd.ipynb --sync``). The
defaults are the ``cpu`` profile; profile YAMLs hold only what differs.

Design (issue 30): every architecture of ``archs`` is meta-trained on FewAsp(single) train
(``train_episodes`` episodes per epoch, at most ``max_epochs`` epochs, early stopping when the mean
episode AUC on held-out episodes of ``tune_on`` has not improved for ``patience`` epochs, best
epoch restored). ``tune_on``'s validation split (16 classes, disjoint from train and test) is cut
by sentence into a *fit* view (``1 - holdout``: static thresholds, both threshold policies) and a
*held-out* view (``holdout``: model selection -- encoder early stopping, post-hoc policy stopping,
the policies' validation-reward curves). Test: ``eval_datasets``' test splits. ``shared_training``:
one model per (architecture, seed) on episodes cycling through every setting's (N, K); else one
model per setting, as in the paper.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from epi_utils.acd.data import DATASETS
from epi_utils.acd.models import MODELS
from epi_utils.acd.threshold import REWARDS
from epi_utils.workbench.contract import StudyConfig, option

_SETTING = re.compile(r"^(\d+)way(\d+)shot$")
ENCODERS = ("cnn", "minilm", "bert")


def parse_setting(name: str) -> tuple[int, int]:
    """``"5way10shot" -> (5, 10)``; raises ``ValueError`` naming the allowed form."""
    m = _SETTING.match(str(name))
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 1:
        raise ValueError(f"setting must look like '5way5shot' (N >= 2 ways, K >= 1 shots), got {name!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Config(StudyConfig):
    """Validated parameters of Study 05 (multi-label few-shot ACD, Hu et al. 2021)."""

    n_seeds: int = option(5, "independent training runs: the unit of the intervals and paired comparisons", ge=1)
    settings: tuple[str, ...] = option(["5way5shot", "10way5shot"], "N-way K-shot settings", nonempty=True,
                                       unique=True)
    n_query: int = option(5, "query instances per class in every episode", ge=1)
    archs: tuple[str, ...] = option(list(MODELS), "architectures trained per seed: ProtoNet, Proto-AWATT and its "
                                    "attention ablations (proto_awatt is required)", choices=MODELS, nonempty=True,
                                    unique=True)
    train_episodes: int = option(100, "training episodes per epoch (FewAsp(single) train)", ge=1)
    max_epochs: int = option(2, "epochs at most (early stopping may end training sooner)", ge=1)
    patience: int = option(3, "epochs without a better held-out AUC before training stops (best epoch restored)",
                           ge=1)
    tune_on: str = option("FewAsp(multi)", "dataset whose validation split (classes disjoint from train and test) "
                          "tunes the thresholds, trains the policies and selects models", choices=DATASETS)
    holdout: float = option(0.3, "share of tune_on's validation sentences held out for model selection", gt=0.0,
                            lt=1.0)
    val_episodes: int = option(30, "fit-view episodes per setting: static threshold and post-hoc policy training",
                               ge=1)
    select_episodes: int = option(15, "held-out episodes per setting: early stopping and policy validation reward",
                                  ge=1)
    test_episodes: int = option(60, "test episodes per setting and test dataset (identical for every method)",
                                ge=1)
    eval_datasets: tuple[str, ...] = option(["FewAsp(multi)", "FewAsp"], "test datasets (test classes disjoint from "
                                            "tune_on's)", choices=DATASETS, nonempty=True, unique=True)
    encoder: str = option("cnn", "cnn (GloVe 50d + CNN, the paper's setting) | minilm (frozen all-MiniLM-L6-v2) | "
                          "bert (fine-tuned)", choices=ENCODERS)
    model_id: str = option("bert-base-uncased", "Hugging Face id of the BERT encoder (used by encoder bert)")
    hidden: int = option(64, "encoder output size per token", ge=1)
    attn_dim: int = option(32, "attention size of Proto-AWATT", ge=1)
    dropout: float = option(0.1, "dropout on word embeddings during training", ge=0.0, lt=1.0)
    lr: float = option(0.003, "Adam learning rate of the encoder and heads", gt=0)
    policy_reward: str = option("macro_f1", "REINFORCE reward of both policies: episode macro-F1 (the evaluation "
                                "metric) or instance F1", choices=REWARDS)
    policy_max_epochs: int = option(30, "post-hoc policy: epochs at most over the fit-view episodes", ge=1)
    policy_patience: int = option(3, "post-hoc policy: epochs without a better held-out reward before it stops "
                                  "(best epoch restored)", ge=1)
    policy_sigma: float = option(0.5, "std of the Gaussian policy over the threshold's logit", gt=0)
    policy_lr: float = option(0.01, "Adam learning rate of both threshold policies", gt=0)
    shared_training: bool = option(True, "True: one model per seed on all settings' shapes (cpu); False: one per "
                                   "setting (paper)")
    num_threads: int = option(1, "torch CPU threads (1 avoids oversubscription on a shared machine)", ge=1)

    def check(self) -> None:
        for s in self.settings:
            try:
                parse_setting(s)
            except ValueError as err:
                raise self.error("settings", str(err)) from None
        if "proto_awatt" not in self.archs:
            raise self.error("archs", "must include proto_awatt (the thresholds and policies are Proto-AWATT's)")
        if not self.model_id.strip():
            raise self.error("model_id", "must not be empty")

    @property
    def seeds(self) -> list[int]:
        """``seed, seed + 1, ..., seed + n_seeds - 1``."""
        return [self.seed + i for i in range(self.n_seeds)]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(n_way, k_shot)`` of each setting, in order."""
        return [parse_setting(s) for s in self.settings]
