"""Notebook parameters: read the ``parameters`` cell, load profiles, validate values.

Papermill injects parameters *after* the cell tagged ``parameters`` and only warns about names
it does not know, so a typo silently runs the defaults. This module builds on papermill's own
reader (``papermill.inspect_notebook``): every parameter papermill sees must be one this module
parses and the other way round, so a line papermill cannot read is refused instead of being
injected wrongly. The committed notebooks hold ``name: type = literal  # comment`` lines (generated
from the study's config); a line edited in JupyterLab as papermill accepts it, ``name = literal``
(no annotation, comment optional), is read too, its type inferred from the literal as papermill
does. Every value is then checked by name and type *before* anything runs.

A study builds its config object from the parameters with :func:`config_from_params`.

Profiles live in ``notebooks/params/<notebook stem>/<profile>.yaml``: flat mappings of
parameter name to value, validated the same way.
"""
from __future__ import annotations

import ast
import io
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


def skip_iri_format_checkers() -> None:
    """Before importing nbformat or papermill: keep jsonschema from importing ``rfc3987_syntax``, whose
    import builds 38 Lark parsers (about 3 s of CPU in every fresh process that reads or runs a
    notebook: each ``epi`` command, sweep worker, test worker; issue 34). jsonschema then registers no
    ``iri``/``iri-reference`` format checkers; nothing here validates with a format checker (nbformat,
    papermill, nbconvert, nbclient and jupyter_client pass none), so no validation changes. Does
    nothing where jsonschema's formats are already loaded."""
    sys.modules.setdefault("rfc3987_syntax", None)  # an ImportError for jsonschema, which it skips


skip_iri_format_checkers()  # once, at import: every module that reads or runs notebooks imports this one


ALLOWED_TYPES = ("int", "float", "str", "bool", "list")
REQUIRED_PARAMETERS = ("profile", "seed", "device")
MAX_INT = 2**63 - 1


class ParameterError(ValueError):
    """A parameter name, value or profile that the notebook does not accept."""


class NotebookConventionError(ValueError):
    """A notebook whose parameters cell breaks the project's conventions."""


@dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter: ``name: type_name = default  # comment``."""

    name: str
    type_name: str
    default: Any
    comment: str
    item_type: str | None = None  # for ``list[int]`` etc.


def _read_notebook(nb_path: Path):
    import nbformat

    nb_path = Path(nb_path)
    if not nb_path.is_file():
        raise FileNotFoundError(f"notebook not found: {nb_path}")
    try:
        return nbformat.read(nb_path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds
        raise NotebookConventionError(f"{nb_path}: not a readable notebook ({exc})") from exc


def parameters_cell_source(nb_path: Path) -> str:
    """Source of the first code cell, which must be tagged ``parameters``."""
    nb = _read_notebook(nb_path)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if not code_cells:
        raise NotebookConventionError(f"{nb_path}: has no code cell")
    first = code_cells[0]
    if "parameters" not in first.get("metadata", {}).get("tags", []):
        raise NotebookConventionError(f"{nb_path}: the first code cell must be tagged 'parameters'")
    return first.source


def _annotation(node: ast.expr, where: str) -> tuple[str, str | None]:
    if isinstance(node, ast.Name) and node.id in ALLOWED_TYPES:
        return node.id, None
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "list"
            and isinstance(node.slice, ast.Name) and node.slice.id in ALLOWED_TYPES[:4]):
        return "list", node.slice.id
    raise NotebookConventionError(f"{where}: type annotation must be one of {ALLOWED_TYPES} or list[T], "
                                  f"got {ast.unparse(node)!r}")


def _inferred_type(value: Any, where: str, name: str) -> tuple[str, str | None]:
    """``(type, item type)`` of a ``name = literal`` line, from the literal (papermill's inference)."""
    for kind in (bool, int, float, str):
        if type(value) is kind:
            return kind.__name__, None
    if isinstance(value, list):
        kinds = {type(v).__name__ for v in value}
        item = kinds.pop() if len(kinds) == 1 else None
        return "list", item if item in ALLOWED_TYPES[:4] else None
    raise NotebookConventionError(f"{where}: {name!r} = {value!r}: a parameter is an int, float, str, bool or "
                                  "list literal")


def _papermill_view(nb_path: Path, specs: Mapping[str, "ParameterSpec"]) -> None:
    """Refuse a parameters cell that papermill reads differently from :func:`parse_parameters`."""
    import logging

    import papermill as pm

    logging.getLogger("papermill.translators").setLevel(logging.ERROR)
    seen = pm.inspect_notebook(str(nb_path))
    missing = [n for n in specs if n not in seen]
    if missing:
        raise NotebookConventionError(
            f"{nb_path.name}: papermill cannot read parameter(s) {missing} of the parameters cell, so it "
            "would not inject them (papermill's parser refuses some comments, e.g. ones containing '='); "
            "rewrite those lines as 'name: type = literal  # comment'")
    extra = [n for n in seen if n not in specs]
    if extra:
        raise NotebookConventionError(f"{nb_path.name}: papermill sees parameter(s) {extra} that are not "
                                      "'name: type = literal  # comment' lines")
    for name, spec in specs.items():
        try:
            pm_default = ast.literal_eval(seen[name]["default"])
        except (ValueError, SyntaxError):
            pm_default = object()
        if pm_default != spec.default:
            raise NotebookConventionError(f"{nb_path.name}: papermill reads the default of {name!r} as "
                                          f"{seen[name]['default']!r}, not {spec.default!r}")


def parse_parameters(nb_path: Path | str) -> dict[str, ParameterSpec]:
    """Declared parameters of a notebook, in order.

    Every statement of the parameters cell must be ``name: type = literal`` with a trailing
    ``# comment``; anything else raises :class:`NotebookConventionError` naming the line. The
    result must agree with papermill's ``inspect_notebook`` (names and defaults).
    """
    nb_path = Path(nb_path)
    source = parameters_cell_source(nb_path)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NotebookConventionError(f"{nb_path}: parameters cell is not valid Python ({exc})") from exc
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    specs: dict[str, ParameterSpec] = {}
    for stmt in tree.body:
        where = f"{nb_path.name}: parameters cell line {stmt.lineno}"
        plain = (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name))
        if not plain and not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                              and stmt.value is not None):
            raise NotebookConventionError(f"{where}: only 'name: type = literal  # comment' (or 'name = literal') "
                                          f"is allowed, got {ast.unparse(stmt)!r}")
        target = stmt.targets[0] if plain else stmt.target
        try:
            default = ast.literal_eval(stmt.value)
        except ValueError as exc:
            raise NotebookConventionError(f"{where}: value of {target.id!r} must be a literal "
                                          f"(nothing derived), got {ast.unparse(stmt.value)!r}") from exc
        comment = comments.get(stmt.end_lineno or stmt.lineno, "")
        if plain:  # 'name = literal' as typed in JupyterLab: the type is the literal's, as papermill infers it
            type_name, item_type = _inferred_type(default, where, target.id)
        else:
            type_name, item_type = _annotation(stmt.annotation, where)
            if not comment:
                raise NotebookConventionError(f"{where}: parameter {target.id!r} needs a '# comment' saying what it is")
        spec = ParameterSpec(target.id, type_name, default, comment, item_type)
        coerce_value(spec, default, origin=f"{nb_path.name} default")
        specs[spec.name] = spec
    missing = [p for p in REQUIRED_PARAMETERS if p not in specs]
    if missing:
        raise NotebookConventionError(f"{nb_path}: parameters cell must define {list(REQUIRED_PARAMETERS)}; missing {missing}")
    _papermill_view(nb_path, specs)
    return specs


def config_from_params(config_class: type, namespace: Mapping[str, Any], **extra: Any):
    """Build a study's config dataclass from a notebook's parameters (its ``globals()``).

    Takes every field of ``config_class`` found in ``namespace`` (plus ``extra``), and calls the
    constructor, whose ``__post_init__`` validates. A field that is neither in the namespace nor has
    a default raises :class:`ParameterError` naming it. Names in the namespace that are not fields
    are ignored (a notebook's globals hold much else).
    """
    import dataclasses

    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"config_from_params needs a dataclass, got {config_class!r}")
    kwargs: dict[str, Any] = {}
    missing = []
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue
        if f.name in extra:
            kwargs[f.name] = extra[f.name]
        elif f.name in namespace:
            kwargs[f.name] = namespace[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            missing.append(f.name)
    if missing:
        raise ParameterError(f"{config_class.__name__} needs parameter(s) {missing}, not set by the notebook")
    return config_class(**kwargs)


def profile_redundancies(nb_path: Path | str, profile: str) -> list[str]:
    """Names in a profile YAML whose value equals the notebook's default (a profile holds only
    what differs from the defaults; ``profile`` itself is exempt)."""
    specs = parse_parameters(nb_path)
    out = []
    for name, raw in load_profile(nb_path, profile).items():
        if name == "profile" or name not in specs:
            continue
        if coerce_value(specs[name], raw, origin=f"profile {profile}") == specs[name].default:
            out.append(name)
    return out


def _coerce_scalar(type_name: str, value: Any, what: str) -> Any:
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ParameterError(f"{what}: expected bool (true/false), got {value!r}")
    if type_name == "int":
        if isinstance(value, bool):
            raise ParameterError(f"{what}: expected int, got bool {value!r}")
        number = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                pass
        if number is None:
            raise ParameterError(f"{what}: expected int, got {value!r}")
        if abs(number) > MAX_INT:  # torch, NumPy and the kernel's C code take 64-bit integers
            raise ParameterError(f"{what}: integer out of range (|value| <= 2**63 - 1), got {number}")
        return number
    if type_name == "float":
        if isinstance(value, bool):
            raise ParameterError(f"{what}: expected float, got bool {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ParameterError(f"{what}: expected float, got {value!r}")
    if type_name == "str":
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # bytes the shell could not decode (surrogate escapes)
                raise ParameterError(f"{what}: not valid UTF-8 text, got {value!r}") from None
            return value
        raise ParameterError(f"{what}: expected str, got {type(value).__name__} {value!r}")
    raise ParameterError(f"{what}: unsupported type {type_name!r}")


def coerce_value(spec: ParameterSpec, value: Any, *, origin: str = "value") -> Any:
    """Check ``value`` against ``spec`` and convert it (a CLI string ``"0.1"`` becomes ``0.1``).

    Lists may be given as a YAML/JSON list or, from the command line, as ``"[1, 2]"`` or ``"1,2"``.
    Raises :class:`ParameterError` naming the parameter, the expected type and the value.
    """
    what = f"parameter {spec.name!r} ({origin})"
    if spec.type_name != "list":
        return _coerce_scalar(spec.type_name, value, what)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ParameterError(f"{what}: expected a list, got {value!r}") from exc
        else:
            value = [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"{what}: expected a list, got {value!r}")
    item = spec.item_type
    if item is None:  # infer from the default's items
        kinds = {type(v).__name__ for v in spec.default} if spec.default else set()
        item = kinds.pop() if len(kinds) == 1 else None
    return [(_coerce_scalar(item, v, what) if item else v) for v in value]


def study_name(nb_path: Path | str) -> str:
    """The study a notebook belongs to: its file stem, e.g. ``02_epi_vs_static``."""
    return Path(nb_path).stem


def profiles_dir(nb_path: Path | str) -> Path:
    """``notebooks/params/<stem>/`` beside the notebook."""
    nb_path = Path(nb_path)
    return nb_path.parent / "params" / nb_path.stem


def available_profiles(nb_path: Path | str) -> list[str]:
    folder = profiles_dir(nb_path)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_profile(nb_path: Path | str, profile: str) -> dict[str, Any]:
    """The raw mapping of ``notebooks/params/<stem>/<profile>.yaml`` (unvalidated)."""
    import yaml

    path = profiles_dir(nb_path) / f"{profile}.yaml"
    if not path.is_file():
        raise ParameterError(f"profile {profile!r} not found for {Path(nb_path).name}: no file {path}; "
                             f"available profiles: {', '.join(available_profiles(nb_path)) or 'none'}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParameterError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a profile is a YAML "
                             "mapping of parameter name -> value") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: must be a mapping of parameter name -> value, got {type(data).__name__}")
    return data


def resolve_parameters(nb_path: Path | str, *, profile: str = "cpu",
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parameters for a run: the profile's YAML overlaid with ``overrides``, all validated.

    Unknown names raise :class:`ParameterError` listing the valid names; values of the wrong
    type raise naming the parameter and expected type. ``profile`` itself is always set to the
    profile's name.
    """
    specs = parse_parameters(nb_path)
    values: dict[str, Any] = {}
    sources = [(f"profile {profile}", load_profile(nb_path, profile)), ("override", dict(overrides or {}))]
    for origin, mapping in sources:
        unknown = sorted(k for k in mapping if k not in specs)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {unknown} ({origin}) for {Path(nb_path).name}; "
                                 f"valid names: {', '.join(specs)}")
        for name, raw in mapping.items():
            values[name] = coerce_value(specs[name], raw, origin=origin)
    values["profile"] = profile
    return values


def effective_parameters(nb_path: Path | str, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter a run uses: the notebook's parameters-cell defaults overlaid with ``resolved``
    (the profile's and ``-p`` values from :func:`resolve_parameters`), in the cell's order."""
    values = {name: spec.default for name, spec in parse_parameters(nb_path).items()}
    values.update(resolved)
    return values


def sync_parameters_cell(nb_path: Path | str, source: str) -> bool:
    """Rewrite a notebook's ``parameters`` cell to ``source`` (``contract.parameters_cell(Config)``,
    generated from the notebook's config). Returns True when the cell changed. Other cells, outputs and metadata are kept; the file is replaced
    atomically.
    """
    import os

    import nbformat

    nb_path = Path(nb_path)
    nb = _read_notebook(nb_path)
    parameters_cell_source(nb_path)  # the first code cell must be the tagged parameters cell
    first = next(c for c in nb.cells if c.cell_type == "code")
    want = source
    if first.source == want:
        return False
    first.source = want
    tmp = nb_path.with_name(f".{nb_path.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, nb_path)
    return True
