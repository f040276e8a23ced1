"""A cross-validation repeated with several training seeds (the "5 folds x 3 seeds" of a paper),
pooled into one summary.

Each training seed is a whole cross-validation of its own, ``OUT/seed-<S>/`` (cv.json, folds,
summary, figure), with the same folds, continued as ``cross-validate`` continues one. The pooled
summary in ``OUT`` averages each subject's metrics over the seeds, so the subjects stay the unit of
replication (mean and 95% CI over subjects, per site, paired tests), and lists beside it each
seed's cross-validated means and margins over the better baseline: their spread is what the
training seed alone moves a cross-validation's result, which one seed cannot show.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.config import Config, with_absolute_paths
from mrsynth.errors import MrsynthError
from mrsynth.evaluation.results import EvaluationResult, better_baseline
from mrsynth.experiments.crossval import (CV_FILE, check_every_subject_scored, cross_validate, fold_evaluations, fold_rows,
                                          result_of_rows, site_folds, write_subject_tables)

SEED_METRICS = ("psnr_z", "ssim_z")  # the per-seed table's metrics: the project's scale-invariant pair


def seed_folder(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def cross_validate_seeds(cfg: Config, backend: str, out: Path, train_seeds: Sequence[int], k: int = 5,
                         seed: int = 0, log: Callable[[str], None] = print,
                         score_workers: int = 0) -> dict[str, Any]:
    """Run (or continue) one cross-validation of ``cfg`` per training seed, in turn, into
    ``out/seed-<S>/`` (``seed``: the fold assignment's, shared by all), then write the pooled
    summary into ``out``; return it."""
    cfg = with_absolute_paths(cfg)
    out = Path(out).absolute()
    if (out / CV_FILE).is_file():
        raise MrsynthError(f"{out / CV_FILE}: this folder holds a cross-validation of one seed; "
                           "choose another --out for several --train-seeds")
    for train_seed in train_seeds:
        log(f"training seed {train_seed}")
        seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=train_seed))
        cross_validate(seeded, backend, seed_folder(out, train_seed), k, seed, log, score_workers)
    sites, folds = site_folds(cfg, k, seed)
    return write_seed_pool(out, folds, sites, {s: fold_evaluations(seed_folder(out, s), folds) for s in train_seeds})


def mean_over_seeds(rows_by_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each (subject, method)'s metrics averaged over the seeds; every seed must hold every row."""
    keyed = {seed: {(r["subject"], r["method"]): r for r in rows} for seed, rows in rows_by_seed.items()}
    keys = sorted(set().union(*(set(k) for k in keyed.values())))
    for seed, table in keyed.items():
        missing = [k for k in keys if k not in table]
        if missing:
            raise MrsynthError(f"seed-{seed}: no scores of {missing[0][1]} on {missing[0][0]} "
                               f"({len(missing)} subject-method pair(s) missing), which another seed has")
    averaged = []
    for key in keys:
        rows = [table[key] for table in keyed.values()]
        metrics = sorted({m for r in rows for m in r} - {"subject", "method"})
        averaged.append({"subject": key[0], "method": key[1],
                         **{m: float(np.mean([r[m] for r in rows])) for m in metrics}})
    return averaged


def seed_margins(results: dict[int, EvaluationResult]) -> dict[int, dict[str, dict[str, Any]]]:
    """Per seed and metric: the run's mean over the held-out subjects, the better baseline (name
    and mean) and the run's margin over it."""
    table: dict[int, dict[str, dict[str, Any]]] = {}
    for seed, result in results.items():
        run = next(m for m in result.methods if result.kinds[m] == "run")
        table[seed] = {}
        for metric in SEED_METRICS:
            means = {m: float(result.summary[m][metric]["mean"]) for m in result.methods}
            best = better_baseline(result.kinds, means)
            table[seed][metric] = {"run": run, "run_mean": means[run], "baseline": best,
                                   "baseline_mean": means[best], "margin": means[run] - means[best]}
    return table


def seed_markdown(margins: dict[int, dict[str, dict[str, Any]]]) -> str:
    """Each seed's cross-validated means and margins, then their mean, sd and spread over the seeds."""
    header = "| training seed | " + " | ".join(f"run {m} | better baseline | margin" for m in SEED_METRICS) + " |"
    lines = [f"# Cross-validation over {len(margins)} training seed(s)", "",
             "Each seed's cross-validation (`seed-<S>/`): the run's mean over the held-out subjects, the better "
             "baseline's (identity excluded) and the margin between them.", "",
             header, "|---|" + "---|---|---|" * len(SEED_METRICS)]
    for seed, row in margins.items():
        lines.append(f"| {seed} | " + " | ".join(
            f"{row[m]['run_mean']:.3f} | {row[m]['baseline_mean']:.3f} ({row[m]['baseline']}) | {row[m]['margin']:+.3f}"
            for m in SEED_METRICS) + " |")
    if len(margins) > 1:
        for label, reduce in (("mean over seeds", lambda x: f"{np.mean(x):.3f}"),
                              ("sd over seeds", lambda x: f"{np.std(x, ddof=1):.3f}"),
                              ("spread (max - min)", lambda x: f"{np.ptp(x):.3f}")):
            cells = []
            for m in SEED_METRICS:
                cells += [reduce([row[m][key] for row in margins.values()]) for key in ("run_mean", "baseline_mean")]
                cells.append(reduce([row[m]["margin"] for row in margins.values()]))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "The tables below average each subject's metrics over the seeds first, so their intervals are "
                  "over subjects, as one cross-validation's are.", "", ""]
    return "\n".join(lines)


def write_seed_pool(out: Path, folds: dict[str, int], sites: dict[str, str | None],
                    evaluations: dict[int, dict[int, Path]]) -> dict[str, Any]:
    """The seeds' cross-validations (``evaluations``: seed -> fold -> its evaluation folder) pooled
    into ``out``: summary.md (:func:`seed_markdown`, then the seed-averaged means overall and per
    site), per_subject.csv (each subject's mean over the seeds), summary.csv/json (with each seed's
    margins), paired_tests.csv and folds.csv."""
    rows_by_seed, kinds, per_seed = {}, {}, {}
    for seed, fold_dirs in evaluations.items():
        rows, kinds = fold_rows(fold_dirs)
        check_every_subject_scored(seed_folder(out, seed), rows, folds)
        rows_by_seed[seed] = rows
        per_seed[seed] = result_of_rows(rows, kinds, sorted(folds))
    margins = seed_margins(per_seed)
    _, summary = write_subject_tables(
        Path(out), folds, sites, mean_over_seeds(rows_by_seed), kinds,
        {"training_seeds": list(evaluations), "per_seed": {str(seed): row for seed, row in margins.items()}},
        seed_markdown(margins))
    return {**summary, "per_seed": margins}
