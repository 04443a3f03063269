"""The decoder methods of Study 04: probes or one shared decoder, alignment, and the extra losses."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """A decoder variant: probes or shared decoder, alignment mode, and which extra losses."""

    name: str
    probe_mode: str = "event_specific"
    alignment: str = "hungarian"
    role_contrastive: bool = True
    probe_consistency: bool = True


#: every method the study can run: the method, the no-probe baseline, the two cells that separate
#: probes from the extra losses, and the three ablations.
VARIANTS: dict[str, Variant] = {
    "probes": Variant("probes"),
    "no_probe": Variant("no_probe", probe_mode="shared", role_contrastive=False, probe_consistency=False),
    "probes_no_extra_losses": Variant("probes_no_extra_losses", role_contrastive=False, probe_consistency=False),
    "no_probe_extra_losses": Variant("no_probe_extra_losses", probe_mode="shared"),
    "wo_alignment": Variant("wo_alignment", alignment="fixed"),
    "wo_role_contrastive": Variant("wo_role_contrastive", role_contrastive=False),
    "wo_probe_consistency": Variant("wo_probe_consistency", probe_consistency=False),
}


def variants_for(methods) -> list[Variant]:
    """The :class:`Variant` of each method name (``ValueError`` naming an unknown one)."""
    unknown = [m for m in methods if m not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(VARIANTS)}")
    return [VARIANTS[m] for m in methods]


def default_variants() -> list[Variant]:
    """The four cells of the design: probes x extra losses (2 x 2)."""
    return variants_for(("probes", "no_probe", "probes_no_extra_losses", "no_probe_extra_losses"))
