"""The report kit shared by the evaluation, benchmark and parity reports."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mrsynth.reporting import (MISSING, format_number, format_significant, html_table, json_safe, json_text,
                               markdown_table, text_table)


@pytest.mark.parametrize("value, spec, expected", [
    (0.123456, None, "0.1235"),
    (-2.5, None, "-2.5000"),
    (999.99994, None, "999.9999"),
    (1234.56, None, "1234.6"),
    (-1234.56, None, "-1234.6"),
    ("0.5", None, "0.5000"),
    (3, None, "3.0000"),
    (12.345, ".1f", "12.3"),
    (0.000123, ".2e", "1.23e-04"),
    (None, None, MISSING),
    ("", ".1f", MISSING),
    (math.nan, ".1f", "nan"),
    (math.inf, None, "inf"),
    (-math.inf, ".2e", "-inf"),
])
def test_format_number(value, spec, expected):
    assert format_number(value, spec) == expected


@pytest.mark.parametrize("value, expected", [
    (0.0, "0"),
    (1e-12, "1.00e-12"),
    (0.00099, "9.90e-04"),
    (0.001, "0.001"),
    (60.0, "60"),
    (1.23456, "1.235"),
    (9999.0, "9999"),
    (12345.6, "1.23e+04"),
    (-0.0123, "-0.0123"),
    (math.nan, "nan"),
    (-math.inf, "-inf"),
    (None, MISSING),
])
def test_format_significant(value, expected):
    assert format_significant(value) == expected


def test_markdown_table_escapes_pipes_in_every_cell():
    assert markdown_table(["a", "b|c"], [["1", "x|y"], [2.5, None]]).splitlines() == [
        "| a | b\\|c |",
        "|---|---|",
        "| 1 | x\\|y |",
        "| 2.5 | None |",
    ]


def test_html_table_escapes_cells():
    assert html_table(["<h>"], [["a&b"], ["<i>"]]) == (
        "<table><thead><tr><th>&lt;h&gt;</th></tr></thead>"
        "<tbody><tr><td>a&amp;b</td></tr><tr><td>&lt;i&gt;</td></tr></tbody></table>")


def test_text_table_aligns_columns_under_a_rule():
    assert text_table(("name", "value"), [["long name", "1"], ["x", "22.5"]]).splitlines() == [
        "name       value",
        "---------  -----",
        "long name  1",
        "x          22.5",
    ]


def test_json_safe_replaces_non_finite_floats_everywhere():
    payload = {"a": math.nan, "b": [1.0, math.inf, (-math.inf, 2)], "c": {"d": np.float64("nan")}, "e": None}
    assert json_safe(payload) == {"a": "nan", "b": [1.0, "inf", ["-inf", 2]], "c": {"d": "nan"}, "e": None}


def test_json_text_is_strict_json_that_reads_back():
    payload = {"value": math.nan, "path": Path("runs/x"), "n": np.int64(3), "ok": 0.5}
    text = json_text(payload)
    assert text.endswith("}\n") and "NaN" not in text
    back = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON token {name}"))
    assert back == {"value": "nan", "path": "runs/x", "n": "3", "ok": 0.5}
    assert math.isnan(float(back["value"]))
