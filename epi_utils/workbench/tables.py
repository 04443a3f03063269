"""Tables and numbers for a reader: p-values, means rounded to what their interval supports, tables
without an index column or empty columns, and the configuration as a parameter table.

- :func:`format_p`: ``p < 0.001``, ``p = 0.004``, ``p = 0.03`` (APA style: two decimals, three
  below 0.01, a floor below which the exact value means nothing).
- :func:`format_interval`: ``0.778 [0.699, 0.857]``: the mean and its interval rounded to two
  significant digits of the interval's half-width (:func:`interval_decimals`), so a number shows
  no more digits than its uncertainty supports (``-0.001071 [-0.004323, 0.002182]`` ->
  ``-0.0011 [-0.0043, 0.0022]``).
- :func:`format_table`: a data frame as the reader should see it: the pandas index dropped (or moved
  into a column when it carries names), ``<c>``/``<c>_low``/``<c>_high`` triplets
  (:func:`epi_utils.workbench.stats.interval_table`) merged into one ``mean [low, high]`` column,
  p-value columns formatted, other numbers to three significant digits, columns that hold nothing
  (all empty, NaN or ``unknown``) dropped, and column names for people.
- :func:`parameter_table`: a study's config as ``parameter | value | default | changed | meaning``,
  collapsed in a report behind a one-line summary of what differs from the defaults.

Both tables are :class:`ReaderTable` objects: a notebook cell that ends with one shows an HTML table
without an index column (``_repr_html_``), and ``str()`` gives the plain-text table.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: cell values that mean "nothing here" (compared lower-cased, stripped): a column of only these is dropped.
EMPTY_VALUES = frozenset({"", "nan", "none", "null", "unknown", "n/a", "na", "-", "\u2013"})
#: column names formatted as p-values by :func:`format_table` unless ``p_columns`` says otherwise.
P_COLUMNS = ("p", "p_value", "pvalue", "p_val", "p-value")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (list, tuple, dict, str)) else False
    except (TypeError, ValueError):
        return False


def format_p(p: float | None, *, floor: float = 0.001, prefix: bool = True) -> str:
    """A p-value for a reader: ``"p < 0.001"`` below ``floor``, ``"p = 0.004"`` below 0.01 (three
    decimals), ``"p = 0.03"`` / ``"p = 0.14"`` from 0.01 on (two decimals). ``prefix=False`` drops
    the ``"p "`` (for a table column named p). NaN or None gives ``""`` (no test was made)."""
    if _is_missing(p):
        return ""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a p-value lies in [0, 1], got {p}")
    if p < floor:
        text = f"< {floor:g}"
    elif p < 0.01:
        text = f"= {p:.3f}"
    else:
        text = f"= {p:.2f}"
    return f"p {text}" if prefix else text.removeprefix("= ")


def _fixed(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals`` places (negative: to tens, hundreds, ...), without ``-0``."""
    if decimals >= 0:
        text = f"{value:.{decimals}f}"
    else:
        text = f"{round(value, decimals):.0f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def format_number(value: Any, *, digits: int = 3) -> str:
    """One number for a reader: ``digits`` significant digits, never fewer than the integer part
    (``0.77777`` -> ``"0.778"``, ``12.345`` -> ``"12.3"``, ``1234.5`` -> ``"1234"``), scientific
    below 0.001 (``"1.23e-05"``) and from 10^7 on; integers as they are, booleans as yes/no, NaN or
    None as ``""``; anything else as ``str``."""
    import numpy as np

    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if not isinstance(value, (float, np.floating)):
        return str(value)
    x = float(value)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude < -3 or magnitude >= 7:
        return f"{x:.{digits - 1}e}"
    return _fixed(x, max(digits - 1 - magnitude, 0))



def format_value(value: Any, *, digits: int = 3) -> str:
    """:func:`format_number`, with a whole float shown as the count it is (``4.0`` -> ``"4"``, not
    ``"4.00"``): for a headline value without an interval, where a count and a measure share a field."""
    if isinstance(value, float) and value.is_integer():
        return format_number(int(value), digits=digits)
    return format_number(value, digits=digits)

def interval_decimals(low: float, high: float, *, digits: int = 2) -> int | None:
    """Decimal places that keep ``digits`` significant digits of the half-width ``(high - low) / 2``
    (negative: round to tens, hundreds, ...); ``None`` for a degenerate or missing interval.
    ``(0.6987, 0.8568)`` -> half-width 0.079 -> 3; ``(1178, 1290)`` -> 56 -> 0; ``(500, 1700)`` -> -1."""
    if _is_missing(low) or _is_missing(high):
        return None
    half = (float(high) - float(low)) / 2.0
    if not math.isfinite(half) or half <= 0.0:
        return None
    return digits - 1 - math.floor(math.log10(half))


def round_to_interval(mean: float, low: float, high: float, *, digits: int = 2) -> tuple[float, float, float]:
    """``(mean, low, high)`` rounded as :func:`format_interval` prints them (unrounded when the
    interval is degenerate or missing)."""
    d = interval_decimals(low, high, digits=digits)
    if d is None:
        return float(mean), float(low), float(high)
    return round(float(mean), d), round(float(low), d), round(float(high), d)


def format_interval(mean: float, low: float, high: float, *, digits: int = 2, number_digits: int = 3) -> str:
    """``"0.778 [0.699, 0.857]"``: the mean and its interval rounded to ``digits`` significant
    digits of the half-width. A missing or degenerate interval (one unit, constant values) prints
    the mean alone with ``number_digits`` significant digits (:func:`format_number`); a missing
    mean prints ``""``."""
    if _is_missing(mean):
        return ""
    d = interval_decimals(low, high, digits=digits)
    if d is None:
        return format_number(float(mean), digits=number_digits)
    return f"{_fixed(float(mean), d)} [{_fixed(float(low), d)}, {_fixed(float(high), d)}]"


def humanize(name: str) -> str:
    """A column name for a reader when none is given: ``"macro_f1"`` -> ``"macro f1"``."""
    return str(name).replace("_", " ").strip()


@dataclasses.dataclass
class ReaderTable:
    """A formatted table: ``frame`` holds strings only and is shown without its index.

    ``caption``: a line printed above the table. ``summary``: when set, the HTML is collapsed in a
    ``<details>`` element behind this one-line summary (a report's configuration).
    """

    frame: pd.DataFrame
    caption: str = ""
    summary: str | None = None

    def to_html(self) -> str:
        table = self.frame.to_html(index=False, border=0, escape=True, na_rep="", classes="reader-table")
        caption = f'<p class="table-caption">{html.escape(self.caption)}</p>\n' if self.caption else ""
        body = caption + table
        if self.summary is None:
            return body
        return f"<details>\n<summary>{html.escape(self.summary)}</summary>\n{body}\n</details>"

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        head = [self.summary] if self.summary else []
        head += [self.caption] if self.caption else []
        return "\n".join(head + [self.frame.to_string(index=False)])

    __repr__ = __str__


def _drop_index(frame: pd.DataFrame) -> pd.DataFrame:
    """The index dropped when it is a plain row counter, moved into columns when it carries names."""
    import pandas as pd

    idx = frame.index
    plain = isinstance(idx, pd.RangeIndex) or (idx.nlevels == 1 and idx.name is None and pd.api.types.is_integer_dtype(idx))
    return frame.reset_index(drop=plain)


def _empty_column(series: pd.Series) -> bool:
    return all(_is_missing(v) or (isinstance(v, str) and v.strip().lower() in EMPTY_VALUES) for v in series)


def _sig_decimals(x: float, digits: int) -> int | None:
    """Decimals :func:`format_number` prints for ``x`` (None where it prints scientific)."""
    if x == 0.0:
        return 0
    magnitude = math.floor(math.log10(abs(x)))
    return None if magnitude < -3 or magnitude >= 7 else max(digits - 1 - magnitude, 0)


def _common_decimals(values: list[float], digits: int) -> int | None:
    """The fewest decimals that show every value of a column exactly (0.05, 0.1, 0.2 -> 2), when that
    is no more than :func:`format_number` would print for each; else None (measured values)."""
    if not values:
        return None
    for k in range(7):
        if all(abs(v - round(v, k)) <= 1e-9 * max(1.0, abs(v)) for v in values):
            limits = [_sig_decimals(v, digits) for v in values]
            return k if all(d is not None and k <= d for d in limits) else None
    return None


def _format_column(series: pd.Series, digits: int) -> list[str]:
    import numpy as np
    import pandas as pd

    values = series.tolist()
    if pd.api.types.is_float_dtype(series):
        finite = [v for v in values if not _is_missing(v) and math.isfinite(v)]
        if finite and all(float(v).is_integer() and abs(v) < 1e15 for v in finite):  # counts stored as float
            return ["" if _is_missing(v) else format_number(int(v)) if math.isfinite(v) else format_number(v)
                    for v in values]
        common = _common_decimals([float(v) for v in finite], digits)
        if common is not None:  # set values (ratios, lambdas): one number of decimals, no padding zeros
            return ["" if _is_missing(v) else _fixed(float(v), common) if math.isfinite(v) else format_number(v)
                    for v in values]
    out = []
    for v in values:
        if isinstance(v, (list, tuple, np.ndarray)):
            out.append(", ".join(format_number(x, digits=digits) for x in v))
        else:
            out.append(format_number(v, digits=digits))
    return out


def format_table(frame: pd.DataFrame, *, names: Mapping[str, str] | None = None, columns: Sequence[str] | None = None,
                 p_columns: Sequence[str] | None = None, digits: int = 3, interval_digits: int = 2,
                 drop_empty: bool = True, caption: str = "", summary: str | None = None) -> ReaderTable:
    """``frame`` formatted for a reader (see the module docstring), as a :class:`ReaderTable`.

    - The index: dropped when it is a row counter, else moved into leading columns.
    - ``columns``: the raw columns to keep, in this order (default: all). Interval triplets
      ``<c>, <c>_low, <c>_high`` become one column ``<c>`` holding ``"mean [low, high]"`` rounded by
      :func:`format_interval` (``interval_digits`` significant digits of the half-width); so does
      ``mean, ci_low, ci_high``.
    - ``p_columns``: columns formatted by :func:`format_p` without the ``"p "`` prefix (default:
      those named as in :data:`P_COLUMNS`).
    - Other numbers: ``digits`` significant digits (:func:`format_number`); integer-valued float
      columns as integers; a column of set values that a few decimals show exactly (ratios 0.05,
      0.1, 0.2) with that one number of decimals (``0.05, 0.10, 0.20``); lists joined with commas.
    - ``drop_empty``: columns whose every cell is missing or one of :data:`EMPTY_VALUES` are dropped.
    - ``names``: raw column -> reader name; the other columns are :func:`humanize`-d.
    """
    import pandas as pd

    df = _drop_index(frame)
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise KeyError(f"format_table: columns {missing} not in the frame; it has {list(df.columns)}")
        keep = list(columns)
        for c in columns:  # bring each kept interval column's bounds along
            keep += [b for b in (f"{c}_low", f"{c}_high") if b in df.columns and b not in keep]
        if "mean" in columns:
            keep += [b for b in ("ci_low", "ci_high") if b in df.columns and b not in keep]
        df = df[keep]
    p_set = set(P_COLUMNS if p_columns is None else p_columns)
    out: dict[str, list[str]] = {}
    used: set[str] = set()
    for c in df.columns:
        if c in used:
            continue
        low, high = (f"{c}_low", f"{c}_high") if c != "mean" or "mean_low" in df.columns else ("ci_low", "ci_high")
        if low in df.columns and high in df.columns:
            used.update({c, low, high})
            if drop_empty and _empty_column(df[c]):
                continue
            out[c] = [format_interval(m, lo, hi, digits=interval_digits, number_digits=digits)
                      for m, lo, hi in zip(df[c], df[low], df[high])]
            continue
        used.add(c)
        if drop_empty and _empty_column(df[c]):
            continue
        if c in p_set:
            out[c] = [format_p(v, prefix=False) for v in df[c]]
        else:
            out[c] = _format_column(df[c], digits)
    names = dict(names or {})
    readable = pd.DataFrame({names.get(c, humanize(c)): v for c, v in out.items()}, dtype=object)
    if readable.columns.duplicated().any():
        raise ValueError(f"format_table: two columns get the same name: {list(readable.columns)}")
    return ReaderTable(readable.reset_index(drop=True), caption=caption, summary=summary)


def _literal(value: Any) -> str:
    """A config value as the parameters cell writes it, strings without quotes."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: [norm(x) for x in v] if isinstance(v, (list, tuple)) else v
    return norm(a) == norm(b)


def parameter_table(cfg: Any, *, extra: Mapping[str, Any] | None = None, changed_first: bool = False,
                    collapsed: bool = True, meaning: bool = True) -> ReaderTable:
    """The configuration of a run: one row per field of ``cfg`` (a frozen dataclass such as a
    :class:`epi_utils.workbench.contract.StudyConfig`) with columns ``parameter``, ``value``,
    ``default``, ``changed`` (``"yes"`` where the value differs from the declared default, else
    empty) and, when ``meaning``, the field's help text.

    ``extra``: name -> value rows put first without a default (e.g. ``{"profile": "smoke"}``).
    ``changed_first``: changed rows first (else declaration order). ``collapsed``: the HTML is a
    ``<details>`` element behind ``"Configuration: k of n parameters differ from their defaults"``.
    """
    import pandas as pd

    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"parameter_table needs a config instance (a dataclass), got {type(cfg).__name__}")
    defaults = type(cfg).defaults() if hasattr(type(cfg), "defaults") else {}
    rows = [{"parameter": k, "value": _literal(v), "default": "", "changed": "", "meaning": ""}
            for k, v in (extra or {}).items()]
    fields = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        known = default is not dataclasses.MISSING
        changed = known and not _same(value, default)
        fields.append({"parameter": f.name, "value": _literal(value), "default": _literal(default) if known else "",
                       "changed": "yes" if changed else "", "meaning": f.metadata.get("help", "")})
    if changed_first:
        fields = [r for r in fields if r["changed"]] + [r for r in fields if not r["changed"]]
    frame = pd.DataFrame(rows + fields, columns=["parameter", "value", "default", "changed", "meaning"], dtype=object)
    if not meaning:
        frame = frame.drop(columns="meaning")
    n_changed = sum(1 for r in fields if r["changed"])
    summary = (f"Configuration: {n_changed} of {len(fields)} parameters differ from their defaults"
               if collapsed else None)
    return ReaderTable(frame, summary=summary)
