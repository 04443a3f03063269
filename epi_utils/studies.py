"""The five studies and the notebook each one runs in: notebook stem -> study package.

This is the runner's map (the ``epi`` command and the contract tests read it); library code never
imports it. Each package follows :mod:`epi_utils.workbench.contract`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

STUDIES: dict[str, str] = {
    "01_importance_drift": "epi_utils.drift",
    "02_epi_vs_static": "epi_utils.isolation_study",
    "03_ilp_taxonomy": "epi_utils.ilp",
    "04_event_probes": "epi_utils.events",
    "05_fewshot_acd": "epi_utils.acd",
}
#: notebooks that are not studies but have a config of their own (same contract for parameters)
CONFIGS: dict[str, str] = {"00_environment": "epi_utils.workbench.environment:EnvironmentConfig"}


def study_package(notebook: str | Path) -> ModuleType | None:
    """The study package of a notebook (by its stem), or None for a notebook that is no study."""
    name = STUDIES.get(Path(notebook).stem)
    return importlib.import_module(name) if name else None


def config_class(notebook: str | Path) -> type | None:
    """The config class whose fields are the notebook's parameters, or None if it has none."""
    stem = Path(notebook).stem
    if stem in STUDIES:
        return study_package(stem).Config
    if stem in CONFIGS:
        module, _, attr = CONFIGS[stem].partition(":")
        return getattr(importlib.import_module(module), attr)
    return None
