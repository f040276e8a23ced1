"""Learning curve: the margin over the best baseline against the number of training subjects.

It answers the first question of a user with pairs: how many do I need? One fold of the
cross-validation's site-stratified split is held out and scores every point; a point trains on
``n`` subjects drawn from the other folds (site by site in turn, seeded, so a seed's smaller sets
are part of its larger ones) at the config's fixed budget, with the seed as the training seed too,
and its baselines are fitted on the same ``n`` subjects. The margin of a point is the run's mean
over the held-out subjects minus the better baseline's mean, per metric.

Points are folders ``seed-<S>/n-<N>/`` (``run/``, ``eval/``) that a later call continues, as
``cross-validate`` does; seeds run in the outer loop, so a stopped curve has whole seeds first.
The tables and the figure are rebuilt from the finished points after each one.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.config import Config, with_absolute_paths
from mrsynth.data.splits import in_turn
from mrsynth.errors import ConfigError
from mrsynth.evaluation.results import better_baseline, csv_text
from mrsynth.experiments.crossval import check_or_write_settings, evaluate_once, site_folds, train_or_resume
from mrsynth.fileio import atomic_write_text

CURVE_FILE = "curve.json"
CURVE_METRICS = ("psnr_z", "ssim_z")


def draw_order(pool: Sequence[str], sites: dict[str, str | None], seed: int) -> list[str]:
    """The pool in the order a seed draws it: each site's subjects shuffled, the sites visited in
    a shuffled order, one subject from each site in turn; the first ``n`` are a point's subjects."""
    by_site: dict[str, list[str]] = {}
    for subject in sorted(pool):
        by_site.setdefault(sites[subject] or "", []).append(subject)
    rng = np.random.default_rng([seed, len(pool)])
    queues = [[members[i] for i in rng.permutation(len(members))] for _, members in sorted(by_site.items())]
    return in_turn([queues[i] for i in rng.permutation(len(queues))])


def parse_sizes(text: str, pool: int) -> list[int]:
    """``1,2,4,all`` -> sorted distinct sizes, ``all`` being the whole pool."""
    sizes = set()
    for item in text.split(","):
        item = item.strip()
        size = pool if item == "all" else int(item) if item.isdigit() else 0
        if not 1 <= size <= pool:
            raise ConfigError(f"--sizes: {item!r} is not a number of subjects from 1 to {pool}, or 'all'")
        sizes.add(size)
    return sorted(sizes)


def point_config(cfg: Config, subjects: Sequence[str], held_out: Sequence[str], seed: int, name: str) -> Config:
    """The config of one point: ``subjects`` trained on, ``held_out`` tested, ``seed`` trained with."""
    data = dataclasses.replace(cfg.data, train_subjects=sorted(subjects), val_subjects=[],
                               test_subjects=sorted(held_out))
    return dataclasses.replace(cfg, data=data, train=dataclasses.replace(cfg.train, seed=seed),
                               run=dataclasses.replace(cfg.run, name=name))


def learning_curve(cfg: Config, backend: str, out: Path, sizes: str, seeds: Sequence[int], fold: int = 0,
                   k: int = 5, split_seed: int = 0, log: Callable[[str], None] = print,
                   score_workers: int = 0) -> list[dict[str, Any]]:
    """Run (or continue) the learning curve of ``cfg`` into ``out``; return its rows.
    ``score_workers``: as ``evaluate --score-workers``."""
    cfg = with_absolute_paths(cfg)
    sites, folds = site_folds(cfg, k, split_seed)
    if not 0 <= fold < k:
        raise ConfigError(f"--fold: {fold} is not one of 0..{k - 1}")
    held_out = sorted(s for s, f in folds.items() if f == fold)
    pool = sorted(s for s, f in folds.items() if f != fold)
    wanted = parse_sizes(sizes, len(pool))
    out = Path(out).absolute()
    check_or_write_settings(out, {"backend": backend, "folds": k, "fold": fold, "split_seed": split_seed,
                                  "sizes": wanted, "seeds": list(seeds), "config": cfg.to_dict(),
                                  "held_out": held_out}, CURVE_FILE)
    for seed in seeds:
        order = draw_order(pool, sites, seed)
        for n in wanted:
            point = out / f"seed-{seed}" / f"n-{n}"
            if not (point / "eval" / "per_subject.csv").is_file():
                log(f"seed {seed}, {n} training subject(s): training, then scoring {len(held_out)} held-out")
                run_dir = point / "run"
                train_or_resume(point_config(cfg, order[:n], held_out, seed, f"{cfg.run.name}-n{n}-s{seed}"),
                                backend, run_dir, log)
                evaluate_once(run_dir, point / "eval", score_workers)
                write_curve(out)  # a stopped curve still has its finished points' tables
    return write_curve(out)


def method_means(eval_dir: Path) -> tuple[dict[str, str], dict[tuple[str, str], float]] | None:
    """(kind per method, mean per (method, metric)) of a finished evaluation: from its
    summary.json, or from summary.csv where a kept results folder holds only the table; None
    before the evaluation has finished."""
    if (eval_dir / "summary.json").is_file():
        methods = json.loads((eval_dir / "summary.json").read_text())["methods"]
        return ({m: e["kind"] for m, e in methods.items()},
                {(m, metric): v["mean"] for m, e in methods.items() for metric, v in e["metrics"].items()})
    if (eval_dir / "summary.csv").is_file():
        with open(eval_dir / "summary.csv", newline="") as handle:
            table = list(csv.DictReader(handle))
        return {r["method"]: r["kind"] for r in table}, {(r["method"], r["metric"]): float(r["mean"]) for r in table}
    return None


def point_rows(out: Path) -> list[dict[str, Any]]:
    """One row per finished point: its size, seed, and per metric the run's mean, the better
    baseline (name and mean; :func:`~mrsynth.evaluation.results.better_baseline`) and the margin."""
    rows = []
    for eval_dir in sorted(Path(out).glob("seed-*/n-*/eval")):
        if (found := method_means(eval_dir)) is None:
            continue
        kinds, means = found
        point = eval_dir.parent
        run = next(m for m, kind in kinds.items() if kind == "run")
        row: dict[str, Any] = {"n": int(point.name[2:]), "seed": int(point.parent.name[5:])}
        for metric in CURVE_METRICS:
            best = better_baseline(kinds, {m: means[m, metric] for m in kinds})
            value = means[run, metric]
            row.update({metric: value, f"{metric}_baseline": best, f"{metric}_baseline_mean": means[best, metric],
                        f"{metric}_margin": value - means[best, metric]})
        rows.append(row)
    return sorted(rows, key=lambda r: (r["n"], r["seed"]))


def write_curve(out: Path) -> list[dict[str, Any]]:
    """curve.csv (every point), curve.md (per size: mean margin over seeds, with each seed's
    value) and learning_curve.png, from the finished points."""
    from mrsynth.evaluation.figures import margin_curve

    rows = point_rows(out)
    if not rows:
        return rows
    atomic_write_text(Path(out) / "curve.csv", csv_text(list(rows[0]), rows))
    atomic_write_text(Path(out) / "curve.md", curve_markdown(rows))
    margin_curve(rows, CURVE_METRICS, Path(out) / "learning_curve.png")
    return rows


def curve_markdown(rows: list[dict[str, Any]]) -> str:
    """Per size: the margins' mean over the seeds that finished and each seed's margin."""
    lines = ["# Learning curve: margin over the better baseline (run mean - baseline mean over the held-out subjects)",
             "", "| training subjects | seeds | " + " | ".join(f"{m} margin: mean (per seed)" for m in CURVE_METRICS)
             + " | " + " | ".join(f"{m} run / baseline" for m in CURVE_METRICS) + " |",
             "|---|---|" + "---|" * (2 * len(CURVE_METRICS))]
    for n in sorted({r["n"] for r in rows}):
        at = [r for r in rows if r["n"] == n]
        margins = [f"{np.mean([r[f'{m}_margin'] for r in at]):+.3f} ("
                   + ", ".join(f"{r[f'{m}_margin']:+.3f}" for r in at) + ")" for m in CURVE_METRICS]
        levels = [f"{np.mean([r[m] for r in at]):.3f} / {np.mean([r[f'{m}_baseline_mean'] for r in at]):.3f}"
                  for m in CURVE_METRICS]
        lines.append(f"| {n} | {len(at)} | " + " | ".join(margins) + " | " + " | ".join(levels) + " |")
    return "\n".join(lines) + "\n"
