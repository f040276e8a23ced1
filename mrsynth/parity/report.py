"""Parity check results: one row per comparison, printed as a table and written as JSON + Markdown."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mrsynth.fileio import atomic_dir

JSON_FILE = "parity.json"
MARKDOWN_FILE = "parity.md"
COLUMNS = ("check", "case", "metric", "value", "tolerance", "result", "note")


@dataclass(frozen=True)
class CheckResult:
    """One comparison: ``value`` passes when <= ``tolerance`` (>= when ``higher_is_better``)."""

    check: str
    case: str
    metric: str
    value: float
    tolerance: float
    higher_is_better: bool = False
    note: str = ""

    def __post_init__(self) -> None:  # numpy scalars in, plain floats out (JSON)
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "tolerance", float(self.tolerance))

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.tolerance if self.higher_is_better else self.value <= self.tolerance

    def bound(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {format_number(self.tolerance)}"

    def cells(self) -> tuple[str, ...]:
        return (self.check, self.case, self.metric, format_number(self.value), self.bound(),
                "pass" if self.passed else "FAIL", self.note)

    def describe(self) -> str:
        """One line for assertion messages."""
        return (f"{self.check} [{self.case}] {self.metric} = {format_number(self.value)} "
                f"(needs {self.bound()}){' ' + self.note if self.note else ''}")

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["passed"] = self.passed
        for key in ("value", "tolerance"):  # JSON has no inf/nan: write them as strings
            if not math.isfinite(row[key]):
                row[key] = str(row[key])
        return row


def format_number(x: float) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def format_table(rows: Sequence[CheckResult]) -> str:
    """A fixed-width text table for the terminal."""
    cells = [COLUMNS] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: Sequence[CheckResult], context: dict[str, Any]) -> str:
    failed = sum(not r.passed for r in rows)
    head = [
        "# mrsynth parity report",
        "",
        f"{len(rows) - failed}/{len(rows)} checks pass" + (f", **{failed} FAIL**" if failed else "") + ".",
        "",
    ]
    head += [f"- {key}: `{json.dumps(value) if not isinstance(value, str) else value}`"
             for key, value in context.items()]
    table = ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    return "\n".join(head + table) + "\n"


def write_report(out_dir: Path, rows: Sequence[CheckResult], context: dict[str, Any]) -> None:
    """Write ``parity.json`` and ``parity.md`` into ``out_dir`` (the directory appears whole or not at all)."""
    payload = {"passed": all(r.passed for r in rows), "context": context,
               "checks": [r.to_json() for r in rows]}
    with atomic_dir(out_dir) as tmp:
        (tmp / JSON_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        (tmp / MARKDOWN_FILE).write_text(markdown(rows, context))
