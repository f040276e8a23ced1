"""Per-subject metric rows -> summaries, paired tests and the CSV/JSON files a report cites."""
from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrsynth.evaluation.metrics import metric_bounds
from mrsynth.evaluation.stats import paired_test, summarize
from mrsynth.fileio import atomic_write_text
from mrsynth.reporting import json_text

MAIN_METRICS = ("psnr", "ssim", "ssim2d", "mae", "nrmse", "pearson")
SCALE_INVARIANT_METRICS = ("psnr_z", "ssim_z", "mae_z", "sharpness")
FULL_METRICS = ("psnr_full", "ssim_full", "mae_full", "psnr_lit", "ssim_lit")
NOT_COMPARED = {"data_range", "n_slices_lit"}  # bookkeeping columns, not quality metrics


@dataclass
class EvaluationResult:
    """Everything a report shows: methods (runs first, then baselines) x subjects x metrics."""

    methods: list[str]
    kinds: dict[str, str]  # method -> "run" | "baseline"
    subjects: list[str]
    rows: list[dict[str, Any]]  # {"subject", "method", <metric>: float, ...}
    summary: dict[str, dict[str, dict[str, float | int | str]]] = field(default_factory=dict)
    tests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        """Metric columns in report order: main, whole-volume/literature, then per-tissue."""
        present = {k for row in self.rows for k in row if k not in ("subject", "method")}
        ordered = [m for m in (*MAIN_METRICS, *SCALE_INVARIANT_METRICS, *FULL_METRICS) if m in present]
        ordered += sorted(k for k in present if k.startswith("mae_") and k not in ordered)
        ordered += sorted(present - set(ordered))
        return ordered

    def values(self, method: str, metric: str) -> list[float]:
        """Per-subject values of a method, in ``subjects`` order (NaN where missing)."""
        by_subject = {r["subject"]: r.get(metric, math.nan) for r in self.rows if r["method"] == method}
        return [float(by_subject.get(s, math.nan)) for s in self.subjects]


def comparison_pairs(result: EvaluationResult) -> list[tuple[str, str]]:
    """Each run against each baseline, then each pair of runs."""
    runs = [m for m in result.methods if result.kinds[m] == "run"]
    baselines = [m for m in result.methods if result.kinds[m] == "baseline"]
    return [(r, b) for r in runs for b in baselines] + list(itertools.combinations(runs, 2))


def finalize(result: EvaluationResult) -> EvaluationResult:
    """Fill in the summary (mean, sd, 95% CI per method and metric) and the paired tests."""
    result.summary = {
        m: {k: summarize(result.values(m, k), metric_bounds(k)) for k in result.metrics} for m in result.methods
    }
    compared = [k for k in result.metrics if k not in NOT_COMPARED]
    result.tests = [
        {"metric": k, "a": a, "b": b, **paired_test(result.values(a, k), result.values(b, k))}
        for a, b in comparison_pairs(result)
        for k in compared
    ]
    return result


def better_baseline(kinds: dict[str, str], means: dict[str, float]) -> str:
    """The baseline with the higher mean (``means``: method -> its mean in one metric, where
    higher is better). Identity (the T1 itself) is a reference, not a baseline a model has to
    beat, so it is not a candidate."""
    candidates = [m for m, kind in kinds.items() if kind == "baseline" and m != "identity"]
    return max(candidates, key=lambda m: means[m])


def csv_text(header: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k, "")) for k in header})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # full precision; 'inf'/'nan' read back with float()
    return value


def summary_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    return [
        {"method": m, "kind": result.kinds[m], "metric": k, **result.summary[m][k]}
        for m in result.methods
        for k in result.metrics
    ]


def write_tables(result: EvaluationResult, out_dir: Path, context: dict[str, Any]) -> dict[str, Path]:
    """per_subject.csv, summary.csv, paired_tests.csv and summary.json (with ``context``)."""
    out_dir = Path(out_dir)
    paths = {
        "per_subject": out_dir / "per_subject.csv",
        "summary_csv": out_dir / "summary.csv",
        "tests": out_dir / "paired_tests.csv",
        "summary_json": out_dir / "summary.json",
    }
    atomic_write_text(paths["per_subject"], csv_text(["subject", "method", *result.metrics], result.rows))
    atomic_write_text(paths["summary_csv"], csv_text(
        ["method", "kind", "metric", "mean", "sd", "ci_low", "ci_high", "ci_method", "n"], summary_rows(result)))
    atomic_write_text(paths["tests"], csv_text(
        ["metric", "a", "b", "n", "mean_diff", "t", "p_t", "w", "p_w", "note"], result.tests))
    payload = {
        **context,
        "methods": {m: {"kind": result.kinds[m], "metrics": result.summary[m]} for m in result.methods},
        "subjects": result.subjects,
        "paired_tests": result.tests,
    }
    atomic_write_text(paths["summary_json"], json_text(payload))
    return paths
