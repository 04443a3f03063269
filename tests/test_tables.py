"""Reader-facing formatting, with the strings worked out by hand."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from epi_utils.workbench.contract import StudyConfig, option
from epi_utils.workbench.stats import interval_table
from epi_utils.workbench.tables import (
    ReaderTable,
    format_interval,
    format_number,
    format_p,
    format_table,
    format_value,
    interval_decimals,
    parameter_table,
    round_to_interval,
)


def test_format_p():
    assert format_p(0.0004) == "p < 0.001"
    assert format_p(1.445708e-01) == "p = 0.14"  # the raw value issue 32 quotes
    assert format_p(0.0312) == "p = 0.03"
    assert format_p(0.0042) == "p = 0.004"
    assert format_p(0.001) == "p = 0.001"
    assert format_p(1.0) == "p = 1.00"
    assert format_p(0.0312, prefix=False) == "0.03"
    assert format_p(0.00001, prefix=False) == "< 0.001"
    assert format_p(0.02, floor=0.05) == "p < 0.05"
    assert format_p(float("nan")) == "" and format_p(None) == ""
    with pytest.raises(ValueError, match="p-value"):
        format_p(1.5)


def test_interval_rounding_follows_the_half_width():
    # issue 32's headline: 0.7778 [0.6987, 0.8568]: half-width 0.07905 -> two significant digits at 3 decimals
    assert interval_decimals(0.6987, 0.8568) == 3
    assert format_interval(0.7778, 0.6987, 0.8568) == "0.778 [0.699, 0.857]"
    # -0.001071 [-0.004323, 0.002182]: half-width 0.003253 -> 4 decimals
    assert format_interval(-0.001071, -0.004323, 0.002182) == "-0.0011 [-0.0043, 0.0022]"
    # large numbers: half-width 56 -> integers; half-width 600 -> tens
    assert format_interval(1234.4, 1178.2, 1290.6) == "1234 [1178, 1291]"
    assert interval_decimals(500, 1700) == -1 and format_interval(1104.0, 504.0, 1704.0) == "1100 [500, 1700]"
    # one significant digit asked for
    assert format_interval(0.7778, 0.6987, 0.8568, digits=1) == "0.78 [0.70, 0.86]"
    # degenerate or missing interval: the mean alone, three significant digits
    assert format_interval(0.77777, 0.77777, 0.77777) == "0.778"
    assert format_interval(0.77777, float("nan"), float("nan")) == "0.778"
    assert format_interval(float("nan"), 0.1, 0.2) == ""
    # no "-0.00" when a small negative rounds to zero
    assert format_interval(-0.0004, -0.02, 0.019) == "0.000 [-0.020, 0.019]"
    assert round_to_interval(0.7778, 0.6987, 0.8568) == (0.778, 0.699, 0.857)


def test_format_number():
    assert format_number(0.77777) == "0.778"
    assert format_number(12.345) == "12.3"
    assert format_number(1234.5) == "1234"  # never fewer digits than the integer part
    assert format_number(0.0000123) == "1.23e-05"
    assert format_number(123456789.0) == "1.23e+08"
    assert format_number(3.0) == "3.00"
    assert format_number(0.0) == "0" and format_number(-0.0001, digits=1) == "-1e-04"
    assert format_number(7) == "7" and format_number(np.int64(7)) == "7"
    assert format_number(True) == "yes" and format_number(float("nan")) == "" and format_number(None) == ""
    assert format_number("5-way 5-shot") == "5-way 5-shot"


def test_format_value_shows_whole_floats_as_counts():
    assert format_value(4.0) == "4" and format_value(0.77777) == "0.778" and format_value(7) == "7"
    assert format_value(float("nan")) == ""


def test_format_table_merges_intervals_formats_p_and_drops_index_and_empty_columns():
    frame = pd.DataFrame({
        "arm": ["epi", "full_sft"],
        "forgetting": [0.7778, 0.1],
        "forgetting_low": [0.6987, 0.05],
        "forgetting_high": [0.8568, 0.15],
        "p_value": [1.445708e-01, 0.00002],
        "paper_auc": ["unknown", "unknown"],
        "spearman_rho": [np.nan, np.nan],
        "n": [8.0, 8.0],
        "unit": ["seeds", "seeds"],
    }, index=[3, 7])  # a filtered frame: the index is a row counter
    table = format_table(frame, names={"forgetting": "forgetting (95% CI)", "p_value": "p"})
    assert isinstance(table, ReaderTable)
    assert list(table.frame.columns) == ["arm", "forgetting (95% CI)", "p", "n", "unit"]
    assert table.frame.to_dict("records") == [
        {"arm": "epi", "forgetting (95% CI)": "0.778 [0.699, 0.857]", "p": "0.14", "n": "8", "unit": "seeds"},
        {"arm": "full_sft", "forgetting (95% CI)": "0.100 [0.050, 0.150]", "p": "< 0.001", "n": "8", "unit": "seeds"},
    ]
    html = table._repr_html_()
    assert "<th>arm</th>" in html and ">3<" not in html and ">7<" not in html  # no index cells
    assert "unknown" not in html and "NaN" not in html
    assert str(table).splitlines()[0].split() == ["arm", "forgetting", "(95%", "CI)", "p", "n", "unit"]


def test_format_table_keeps_a_named_index_and_selects_columns():
    frame = pd.DataFrame({"f1": [0.5, 0.25], "extra": [1, 2]}, index=pd.Index(["a", "b"], name="cause"))
    table = format_table(frame, columns=["cause", "f1"], caption="Per cause")
    assert table.frame.to_dict("list") == {"cause": ["a", "b"], "f1": ["0.50", "0.25"]}
    assert table.to_html().startswith('<p class="table-caption">Per cause</p>')
    with pytest.raises(KeyError, match="not in the frame"):
        format_table(frame, columns=["nope"])


def test_format_table_reads_interval_table_and_summarize_output():
    frame = pd.DataFrame({"setting": ["5-way 5-shot"] * 3, "seed": [0, 1, 2], "acc": [0.8, 0.9, 1.0]})
    tab = interval_table(frame, by=["setting"], columns=["acc"], unit="seeds", unit_column="seed", bounds=(0, 1))
    # logit-t [0.36287, 0.99302]: half-width 0.315 -> 2 decimals
    assert format_table(tab).frame.to_dict("records") == [
        {"setting": "5-way 5-shot", "acc": "0.90 [0.36, 0.99]", "n": "3", "unit": "seeds"}]
    legacy = pd.DataFrame({"metric": ["acc"], "mean": [0.9], "ci_low": [0.85], "ci_high": [0.95], "n": [3]})
    assert format_table(legacy).frame.to_dict("records") == [{"metric": "acc", "mean": "0.900 [0.850, 0.950]", "n": "3"}]


@dataclasses.dataclass(frozen=True)
class _ToyConfig(StudyConfig):
    lr: float = option(1e-4, "learning rate", gt=0)
    arms: list[str] = option(["full_sft", "epi"], "arms compared", nonempty=True)
    epochs: int = option(3, "training epochs", ge=1)


def test_parameter_table():
    cfg = _ToyConfig(lr=3e-4, arms=["epi"], seed=0)
    table = parameter_table(cfg, extra={"profile": "smoke"})
    rows = table.frame.to_dict("records")
    assert rows[0] == {"parameter": "profile", "value": "smoke", "default": "", "changed": "", "meaning": ""}
    by_name = {r["parameter"]: r for r in rows}
    assert by_name["lr"] == {"parameter": "lr", "value": "0.0003", "default": "0.0001", "changed": "yes",
                             "meaning": "learning rate"}
    assert by_name["arms"]["value"] == "[epi]" and by_name["arms"]["default"] == "[full_sft, epi]"
    assert by_name["epochs"]["changed"] == "" and by_name["seed"]["changed"] == ""
    assert table.summary == "Configuration: 2 of 6 parameters differ from their defaults"
    html = table.to_html()
    assert html.startswith("<details>\n<summary>Configuration: 2 of 6") and html.endswith("</details>")
    first = parameter_table(cfg, changed_first=True, collapsed=False, meaning=False)
    assert first.frame["parameter"].tolist()[:2] == ["lr", "arms"] and "meaning" not in first.frame
    assert first.summary is None and not first.to_html().startswith("<details>")
    with pytest.raises(TypeError, match="config instance"):
        parameter_table(_ToyConfig)


def test_format_table_prints_set_values_with_one_number_of_decimals():
    frame = pd.DataFrame({"ratio": [0.05, 0.1, 0.2], "score": [0.5543210, 0.6, 0.123456], "lam": [0.0, 1e-4, 2.5]})
    assert format_table(frame).frame.to_dict("list") == {
        "ratio": ["0.05", "0.10", "0.20"],        # exact at 2 decimals
        "score": ["0.554", "0.600", "0.123"],     # measured: 3 significant digits each
        "lam": ["0", "1.00e-04", "2.50"],         # 1e-4 prints scientific, so no common decimals
    }
