"""What the evaluation, benchmark and parity reports share: how a number is written, tables as
Markdown, HTML and terminal text, and JSON without NaN/Infinity tokens.

One module so that the three reports cannot drift apart: a missing value, a NaN or an infinite
value reads the same in every table and every JSON file mrsynth writes.
"""
from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

MISSING = "–"  # an en dash: a missing value, never confused with a minus sign


def format_number(value: Any, spec: str | None = None) -> str:
    """``value`` as a table cell: :data:`MISSING` for None or "", nan/inf/-inf spelled out, else
    ``format(value, spec)``; without ``spec`` 4 decimals (1 from |x| >= 1000 on)."""
    if value is None or value == "":
        return MISSING
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if spec is None:
        spec = ".1f" if abs(value) >= 1000 else ".4f"
    return format(value, spec)


def format_significant(value: Any) -> str:
    """4 significant digits, scientific below 1e-3 and from 1e4 on, "0" for zero: for values that
    span many orders of magnitude (parity tolerances run from 1e-12 to 60)."""
    if value is None or value == "" or not math.isfinite(float(value)):
        return format_number(value)
    value = float(value)
    if value == 0:
        return "0"
    return format(value, ".2e" if abs(value) >= 1e4 or abs(value) < 1e-3 else ".4g")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown (GitHub) table; a ``|`` inside a cell is escaped so it cannot split the cell."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table for the terminal: left-aligned columns, a rule under the header."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/inf float (in nested dicts, lists, tuples) replaced by its string
    ("nan", "inf", "-inf"): JSON has no such numbers, and a reader can pass the string to float()."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(payload: Any) -> str:
    """A report's JSON file content: indented, non-finite floats as strings (:func:`json_safe`),
    anything else JSON cannot hold (a path, a numpy scalar) as its ``str``."""
    return json.dumps(json_safe(payload), indent=2, allow_nan=False, default=str) + "\n"
