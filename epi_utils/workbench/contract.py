"""The study contract: the one shape every study package follows.

A study package (``epi_utils.drift``, ``isolation_study``, ``ilp``, ``events``, ``acd``) exports

- ``Config``: a frozen dataclass subclassing :class:`StudyConfig`. Every field is declared with
  :func:`option`: its default and help text live there and nowhere else (PEFT's
  ``field(metadata={"help": ...})``). The notebook's ``parameters`` cell is *generated* from it
  (:func:`parameters_cell`, ``epi params NOTEBOOK --sync``); a test fails when the two differ. The
  config's defaults are therefore the notebook's defaults, i.e. the ``cpu`` profile; a profile YAML
  holds only what differs.
- ``run_study(cfg, *, progress=...) -> Result``: builds its own inputs (world, model, data) from
  ``cfg`` and runs the study. ``progress`` is :func:`epi_utils.workbench.progress.progress` or a
  callable with its signature.
- ``rehearse(cfg, *, progress=...) -> Result``: prepares a toy config and toy data in the real data's
  layout, runs the *same* ``run_study`` on them and attaches the full-scale estimate as
  ``result.estimate`` (study 05's pattern).
- ``Result`` with ``frames() -> dict[str, DataFrame]`` (per-unit tables, written beside the run's
  metrics), ``metrics() -> dict`` (the metrics.json payload), ``headlines() -> list[str]`` (dotted
  keys of the metrics shown on the index) and ``timings() -> dict``.
- ``figures``: functions that take frames or a result and *return* matplotlib figures; the notebook
  saves them (:func:`epi_utils.workbench.plots.save_figure`).

:func:`execute` runs a config the way the notebook does (rehearsal or full run) and :func:`save`
writes a result to the run folder. Validation has one error format, :class:`ConfigError`:
``"<Config>.<field>: <problem> (got <value>)"``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import typing
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from epi_utils.workbench import runs
from epi_utils.workbench.params import ParameterError
from epi_utils.workbench.progress import progress as default_progress
from epi_utils.workbench.runs import resolve_device
from epi_utils.workbench.tables import parameter_table

#: parameters every notebook has that are not config fields (the run's bookkeeping, not the study's).
NOTEBOOK_ONLY: dict[str, tuple[str, Any, str]] = {
    "profile": ("str", "cpu", "parameter profile of the run: notebooks/params/<notebook>/<profile>.yaml"),
}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_SCALARS = {int: "int", float: "float", str: "str", bool: "bool"}


class ConfigError(ParameterError):
    """A config value the study does not accept; the message names the config, field and value."""

    def __init__(self, config: str, field: str, problem: str, value: Any = dataclasses.MISSING):
        got = "" if value is dataclasses.MISSING else f" (got {value!r})"
        super().__init__(f"{config}.{field}: {problem}{got}")
        self.config, self.field, self.problem = config, field, problem


def option(default: Any, help: str, *, choices: typing.Sequence[Any] | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None,
           nonempty: bool = False, unique: bool = False) -> Any:
    """A config field: its default, its help text (the parameters cell's comment) and its checks.

    ``choices`` applies to a scalar or to every item of a list; ``ge``/``gt``/``le``/``lt`` bound a
    number or every number of a list; ``nonempty``/``unique`` apply to lists. Help text must not hold
    ``=`` (papermill's parameter parser drops such lines) nor a newline.
    """
    if not isinstance(help, str) or not help.strip():
        raise TypeError("option() needs a help text")
    if "=" in help or "\n" in help:
        raise ValueError(f"help text may hold neither '=' nor a newline (papermill reads it): {help!r}")
    meta = {"help": help.strip(), "choices": tuple(choices) if choices is not None else None, "ge": ge, "gt": gt,
            "le": le, "lt": lt, "nonempty": nonempty, "unique": unique}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_of(cls: type, name: str) -> tuple[str, str | None]:
    """``("int", None)`` or ``("list", "float")`` for a field's annotation."""
    hint = typing.get_type_hints(cls)[name]
    if hint in _SCALARS:
        return _SCALARS[hint], None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) and args and args[0] in _SCALARS and (origin is list or args[1:] in ((), (Ellipsis,))):
        return "list", _SCALARS[args[0]]
    raise TypeError(f"{cls.__name__}.{name}: a config field is int, float, str, bool or list[T] / tuple[T, ...] "
                    f"of those, got {hint!r}")


def _check_scalar(cfg_name: str, name: str, kind: str, value: Any, meta: Mapping[str, Any]) -> Any:
    err = lambda problem: ConfigError(cfg_name, name, problem, value)  # noqa: E731
    if kind == "bool":
        if not isinstance(value, bool):
            raise err("expected true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise err("expected an integer")
        if abs(value) > 2**63 - 1:
            raise err("integer out of range (|value| < 2**63)")
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise err("expected a number")
        value = float(value)
        if not math.isfinite(value):
            raise err("expected a finite number")
    if kind == "str":
        if not isinstance(value, str):
            raise err("expected a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise err("not valid UTF-8 text") from None
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise err(f"must be one of {list(meta['choices'])}")
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise err(f"must be {word} {bound}")
    return value


def validate(cfg: Any) -> None:
    """Check every field of a :class:`StudyConfig` against its annotation and :func:`option` checks.

    Normalises in place (frozen dataclasses included): an int given for a float becomes a float, a
    list for a ``tuple[T, ...]`` field becomes a tuple and a tuple for a ``list[T]`` field a list.
    Raises :class:`ConfigError` for the first bad field.
    """
    cls = type(cfg)
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        kind, item = _type_of(cls, f.name)
        value = getattr(cfg, f.name)
        if kind != "list":
            value = _check_scalar(cls.__name__, f.name, kind, value, f.metadata)
        else:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ConfigError(cls.__name__, f.name, f"expected a list of {item}", value)
            items = [_check_scalar(cls.__name__, f.name, item, v, f.metadata) for v in value]
            if f.metadata.get("nonempty") and not items:
                raise ConfigError(cls.__name__, f.name, "must not be empty", value)
            if f.metadata.get("unique") and len(set(map(repr, items))) != len(items):
                raise ConfigError(cls.__name__, f.name, "must not repeat a value", value)
            value = tuple(items) if typing.get_origin(typing.get_type_hints(cls)[f.name]) is tuple else items
        object.__setattr__(cfg, f.name, value)


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Base of every study's config: the fields all studies share, validation, building from a notebook.

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` and declare every field with :func:`option`.
    Cross-field rules go in :meth:`check` (raise ``self.error(field, problem)``).
    """

    seed: int = option(0, "first seed of the run; a study with several seeds uses seed, seed + 1, ...", ge=0,
                       lt=2**31)
    device: str = option("auto", "auto | cpu | cuda (auto picks cuda when present)")
    rehearse: bool = option(False, "run this profile's code path on CPU at toy scale and estimate the full-scale cost")

    def __post_init__(self) -> None:
        validate(self)
        if not _DEVICE.match(self.device):
            raise self.error("device", "must be auto, cpu, cuda, cuda:N or mps")
        self.check()

    def check(self) -> None:
        """Rules across fields; the default has none."""

    def error(self, name: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` for field ``name`` with its current value."""
        return ConfigError(type(self).__name__, name, problem, getattr(self, name, dataclasses.MISSING))

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` (unknown names raise :class:`ConfigError`)."""
        names = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in names:
                raise ConfigError(type(self).__name__, name, f"unknown field; fields: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Field name -> value (tuples as lists), for metrics.json and reports."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @property
    def torch_device(self):
        """``device`` resolved (``auto`` -> cuda when available, else cpu) as a ``torch.device``."""
        return resolve_device(self.device)

    @classmethod
    def from_parameters(cls, namespace: Mapping[str, Any], **extra: Any):
        """The config from a notebook's parameters (its ``globals()``) plus ``extra``.

        Every field is taken from ``namespace`` when present there (else its default); other names
        in ``namespace`` are ignored (a notebook's globals hold much else).
        """
        kwargs = {f.name: extra.get(f.name, namespace[f.name]) if f.name in namespace else extra[f.name]
                  for f in dataclasses.fields(cls) if f.init and (f.name in namespace or f.name in extra)}
        return cls(**kwargs)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Field name -> declared default."""
        out = {}
        for f in dataclasses.fields(cls):
            out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        return out


def parameter_specs(config_class: type[StudyConfig]) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` of every notebook parameter: :data:`NOTEBOOK_ONLY` first, then
    the config's fields in declaration order. ``type`` is ``int``, ``float``, ``str``, ``bool`` or
    ``list[T]``."""
    specs = [(name, t, d, h) for name, (t, d, h) in NOTEBOOK_ONLY.items()]
    defaults = config_class.defaults()
    for f in dataclasses.fields(config_class):
        kind, item = _type_of(config_class, f.name)
        if "help" not in f.metadata:
            raise TypeError(f"{config_class.__name__}.{f.name} is not declared with option(default, help)")
        specs.append((f.name, f"list[{item}]" if kind == "list" else kind, defaults[f.name], f.metadata["help"]))
    return specs


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell(config_class: type[StudyConfig]) -> str:
    """The ``parameters`` cell a study's notebook must hold: one ``name: type = literal  # help`` line
    per parameter, generated from the config (the only place defaults are declared)."""
    return "\n".join(f"{name}: {t} = {_literal(d)}  # {h}" for name, t, d, h in parameter_specs(config_class))


@runtime_checkable
class StudyResult(Protocol):
    """What ``run_study`` and ``rehearse`` return."""

    config: StudyConfig

    def frames(self) -> dict[str, Any]: ...
    def metrics(self) -> dict[str, Any]: ...
    def headlines(self) -> list[str]: ...
    def timings(self) -> dict[str, Any]: ...


def execute(study: Any, cfg: StudyConfig, *, progress: Callable | None = None) -> StudyResult:
    """Run ``cfg`` through a study package the way its notebook does: ``study.rehearse`` when
    ``cfg.rehearse``, else ``study.run_study``."""
    if progress is None:
        progress = default_progress
    fn = study.rehearse if cfg.rehearse else study.run_study
    return fn(cfg, progress=progress)


def save(result: StudyResult, *, run_dir=None) -> dict[str, Any]:
    """Write a result to the run folder: ``metrics.json`` (metrics, headlines, timings, the config,
    and the rehearsal's estimate when there is one) and ``tables/<name>.csv`` for each frame.
    Returns the metrics written."""
    from pathlib import Path

    folder = Path(run_dir) if run_dir is not None else runs.current_run_dir()
    tables = folder / "tables"
    for name, frame in result.frames().items():
        if frame is None or not hasattr(frame, "to_csv"):
            continue
        tables.mkdir(parents=True, exist_ok=True)
        tmp = tables / f".{name}.csv.tmp"
        frame.to_csv(tmp, index=False)
        tmp.replace(tables / f"{name}.csv")
    metrics = dict(result.metrics())
    metrics.setdefault("config", result.config.to_dict())
    # the report shows the configuration as a collapsed table: value, default, changed?, meaning
    metrics["config_table"] = parameter_table(result.config).frame.to_dict(orient="records")
    card = getattr(result, "card", None)
    if callable(card):  # the study's result card for the index (epi_utils.workbench.cards.Card)
        metrics["card"] = card().to_dict()
    estimate = getattr(result, "estimate", None)
    if estimate is not None:
        metrics["rehearsal"] = estimate.to_dict() if hasattr(estimate, "to_dict") else estimate
    runs.save_metrics(metrics, headlines=result.headlines(), timings=result.timings(), run_dir=folder)
    return metrics
