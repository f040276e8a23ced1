"""Parity check results: one row per comparison, printed as a table and written as JSON + Markdown."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mrsynth.fileio import atomic_dir
from mrsynth.reporting import format_significant, json_text, markdown_table, text_table

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
        return f"{'>=' if self.higher_is_better else '<='} {format_significant(self.tolerance)}"

    def cells(self) -> tuple[str, ...]:
        return (self.check, self.case, self.metric, format_significant(self.value), self.bound(),
                "pass" if self.passed else "FAIL", self.note)

    def describe(self) -> str:
        """One line for assertion messages."""
        return (f"{self.check} [{self.case}] {self.metric} = {format_significant(self.value)} "
                f"(needs {self.bound()}){' ' + self.note if self.note else ''}")

    def to_json(self) -> dict[str, Any]:
        """The row's fields and its verdict (non-finite numbers become strings when written)."""
        return {**asdict(self), "passed": self.passed}


def format_table(rows: Sequence[CheckResult]) -> str:
    """A fixed-width text table for the terminal."""
    return text_table(COLUMNS, [r.cells() for r in rows])


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
    return "\n".join([*head, "", markdown_table(COLUMNS, [r.cells() for r in rows])]) + "\n"


def write_report(out_dir: Path, rows: Sequence[CheckResult], context: dict[str, Any]) -> None:
    """Write ``parity.json`` and ``parity.md`` into ``out_dir`` (the directory appears whole or not at all)."""
    payload = {"passed": all(r.passed for r in rows), "context": context,
               "checks": [r.to_json() for r in rows]}
    with atomic_dir(out_dir) as tmp:
        (tmp / JSON_FILE).write_text(json_text(payload))
        (tmp / MARKDOWN_FILE).write_text(markdown(rows, context))
