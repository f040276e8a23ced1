"""Comparing tables computed in different processes (a plain module: test files import it by name).

numpy's vectorized sums depend on where an array's memory starts, which differs between
processes, so the same metric can differ in its last bit or so: equal here means equal strings,
and numbers within a relative 1e-12 (NaN equal to NaN).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

REL = 1e-12


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def same_value(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return a == b
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=REL, abs_tol=0.0)


def same_to_rounding(rows: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]]) -> bool:
    """The same rows, keys and order; values as ``same_value``."""
    return len(rows) == len(expected) and all(
        row.keys() == other.keys() and all(same_value(row[k], other[k]) for k in row)
        for row, other in zip(rows, expected))
