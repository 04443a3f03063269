"""Study 05's configuration: one frozen :class:`~epi_utils.workbench.contract.StudyConfig`.

Every field is declared once, with its default and help text, by ``option``; the notebook's
parameters cell is generated from it (``epi params notebooks/05_fewshot_acd.ipynb --sync``). The
defaults are the ``cpu`` profile; profile YAMLs hold only what differs.

Training protocol: ``train_episodes`` episodes per epoch, at most ``max_epochs`` epochs, early
stopping when the mean episode AUC on ``val_episodes`` validation episodes has not improved for
``patience`` epochs (the best epoch's weights are restored). ``shared_training``: one model per
(architecture, seed) on episodes cycling through every setting's (N, K); else one model per setting,
as in the paper.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from epi_utils.acd.data import DATASETS
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
    settings: tuple[str, ...] = option(["5way5shot", "5way10shot", "10way5shot", "10way10shot"],
                                       "N-way K-shot settings", nonempty=True, unique=True)
    n_query: int = option(5, "query instances per class in every episode", ge=1)
    train_episodes: int = option(200, "training episodes per epoch", ge=1)
    max_epochs: int = option(3, "epochs at most (early stopping may end training sooner)", ge=1)
    patience: int = option(3, "epochs without a better validation AUC before training stops (best epoch restored)",
                           ge=1)
    val_episodes: int = option(50, "validation episodes: early stopping, static threshold, post-hoc policy", ge=1)
    test_episodes: int = option(200, "test episodes per setting on datasets scored by their own model", ge=1)
    transfer_test_episodes: int = option(100, "test episodes per setting on datasets scored by the FewAsp(single) model",
                                         ge=1)
    eval_datasets: tuple[str, ...] = option(list(DATASETS), "datasets to evaluate", choices=DATASETS, nonempty=True,
                                            unique=True)
    protocol: str = option("auto", "auto: train on a dataset's own train.json when present; transfer: always "
                           "FewAsp(single)", choices=("auto", "transfer"))
    encoder: str = option("cnn", "cnn (GloVe 50d + CNN, the paper's setting) | minilm (frozen all-MiniLM-L6-v2) | "
                          "bert (fine-tuned)", choices=ENCODERS)
    model_id: str = option("bert-base-uncased", "Hugging Face id of the BERT encoder (used by encoder bert)")
    hidden: int = option(64, "encoder output size per token", ge=1)
    attn_dim: int = option(32, "attention size of Proto-AWATT", ge=1)
    dropout: float = option(0.1, "dropout on word embeddings during training", ge=0.0, lt=1.0)
    lr: float = option(0.003, "Adam learning rate of the encoder and heads", gt=0)
    policy_epochs: int = option(5, "REINFORCE epochs of the post-hoc policy over the validation instances", ge=1)
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
