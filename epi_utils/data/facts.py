"""The fact record shared by the synthetic world (:mod:`epi_utils.data.world`) and its real-facts
variant (:mod:`epi_utils.data.world_real`); its own module so that neither imports the other's."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fact:
    """One entity/attribute/value record; ``in_pretrain``: stated in the pretraining corpus."""

    fact_id: str
    entity: str
    attribute: str
    value: str
    in_pretrain: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
