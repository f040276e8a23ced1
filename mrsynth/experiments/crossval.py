"""K-fold cross-validation by whole subject, stratified by site, as nnU-Net users know it.

Every subject is held out exactly once: fold k trains on the other folds (no validation subjects,
so no held-out subject chooses a checkpoint; the last one is evaluated) and ``evaluate`` scores
fold k's subjects against the baselines fitted on fold k's training subjects. One summary pools
the held-out subjects of all folds: mean and 95% CI per metric and method, overall and per site.

A cross-validation is a folder that a later call continues: ``cv.json`` fixes the settings and
the folds (a call with other settings is refused), a fold whose ``eval/`` exists is finished, a
fold whose run stopped part way resumes from its last checkpoint (exactly, as ``train --resume``
does), and the summary is rebuilt from the folds' files, so it equals an uninterrupted run's.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth import runs
from mrsynth.config import Config, with_absolute_paths
from mrsynth.subjects import available_pairs
from mrsynth.errors import CheckpointError, ConfigError, MrsynthError
from mrsynth.evaluation.results import EvaluationResult, finalize, write_tables
from mrsynth.fileio import atomic_write_text
from mrsynth.reporting import format_number, json_text

CV_FILE = "cv.json"
SUMMARY_METRICS = ("psnr_z", "ssim_z", "psnr", "ssim", "mae")


def stratified_folds(sites: dict[str, str | None], k: int, seed: int) -> dict[str, int]:
    """Subject -> fold (0..k-1): each site's subjects shuffled (seeded) and dealt in turn,
    continuing where the previous site stopped, so the folds differ in size by at most one and
    each site is spread over them as evenly as its size allows."""
    if k < 2:
        raise ConfigError(f"--folds: at least 2 (got {k})")
    if len(sites) < k:
        raise ConfigError(f"--folds {k}: only {len(sites)} subjects; every fold needs one to hold out")
    folds: dict[str, int] = {}
    position = 0
    for index, site in enumerate(sorted({s or "" for s in sites.values()})):
        members = sorted(s for s, v in sites.items() if (v or "") == site)
        for i in np.random.default_rng([seed, index]).permutation(len(members)):
            folds[members[i]] = position % k
            position += 1
    return folds


def fold_config(cfg: Config, folds: dict[str, int], fold: int, run_name: str) -> Config:
    """The config of one fold: its subjects held out, all the others trained on, none validated."""
    data = dataclasses.replace(
        cfg.data, train_subjects=sorted(s for s, f in folds.items() if f != fold), val_subjects=[],
        test_subjects=sorted(s for s, f in folds.items() if f == fold))
    return dataclasses.replace(cfg, data=data, run=dataclasses.replace(cfg.run, name=run_name))


def _settings(cfg: Config, backend: str, k: int, seed: int, folds: dict[str, int],
              sites: dict[str, str | None]) -> dict[str, Any]:
    return {"backend": backend, "folds": k, "seed": seed, "config": cfg.to_dict(),
            "subjects": {s: {"fold": folds[s], "site": sites[s]} for s in sorted(folds)}}


def check_or_write_settings(out: Path, settings: dict[str, Any], name: str = CV_FILE) -> None:
    """The first call writes the settings file; a later call must ask for the same experiment."""
    path = out / name
    wanted = json.loads(json_text(settings))
    if path.is_file():
        recorded = json.loads(path.read_text())
        if recorded != wanted:
            changed = sorted(k for k in wanted if recorded.get(k) != wanted[k])
            raise MrsynthError(f"{path}: this folder holds an experiment with other settings "
                               f"({', '.join(changed)}); choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json_text(settings))


def train_or_resume(cfg: Config, backend: str, run_dir: Path, log: Callable[[str], None]) -> None:
    """Train a run, or resume the one a kill interrupted; a completed run is kept."""
    from mrsynth.training.loop import train

    if (run_dir / runs.RUN_FILE).is_file():
        status = runs.read_run_info(run_dir).get("status")
        if status == "completed":
            return
        log(f"{run_dir.parent.name}: resuming its run ({status})")
        try:
            train(runs.load_run_config(run_dir), backend, run_dir, resume=True)
            return
        except CheckpointError:  # killed before its first checkpoint: nothing to keep
            shutil.rmtree(run_dir)
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # killed while the run folder was being made
    train(cfg, backend, run_dir, resume=False)


def evaluate_once(run_dir: Path, out: Path, score_workers: int = 0) -> None:
    """``evaluate`` of the run's last checkpoint on its test subjects, unless ``out`` holds it."""
    from mrsynth.evaluation.runner import evaluate_runs, load_run

    if not (out / "per_subject.csv").is_file():
        evaluate_runs([load_run(run_dir, "last")], "test", out, score_workers=score_workers)


def site_folds(cfg: Config, k: int, seed: int) -> tuple[dict[str, str | None], dict[str, int]]:
    """Each subject's site in ``cfg``'s data and its fold of the site-stratified split: the one
    split that cross-validate, the learning curve and the lever sweep's pooled tables share."""
    sites = {f.subject: f.site for f in available_pairs(cfg.data)}
    return sites, stratified_folds(sites, k, seed)


def cross_validate(cfg: Config, backend: str, out: Path, k: int = 5, seed: int = 0,
                   log: Callable[[str], None] = print, score_workers: int = 0) -> dict[str, Any]:
    """Run (or continue) a K-fold cross-validation of ``cfg`` into ``out``; return the summary.
    ``score_workers``: as ``evaluate --score-workers``."""
    cfg = with_absolute_paths(cfg)
    sites, folds = site_folds(cfg, k, seed)
    out = Path(out).absolute()
    if any(out.glob(f"seed-*/{CV_FILE}")):
        raise MrsynthError(f"{out}: this folder holds cross-validations of several training seeds "
                           "(seed-<S>/); continue them with --train-seeds, or choose another --out")
    check_or_write_settings(out, _settings(cfg, backend, k, seed, folds, sites))
    for fold in range(k):
        fold_dir = out / f"fold-{fold}"
        if (fold_dir / "eval" / "per_subject.csv").is_file():
            log(f"fold {fold}: finished earlier, kept")
            continue
        held_out = sorted(s for s, f in folds.items() if f == fold)
        log(f"fold {fold}: training on {len(folds) - len(held_out)} subjects, holding out {len(held_out)}")
        run_dir = fold_dir / "run"
        train_or_resume(fold_config(cfg, folds, fold, f"{cfg.run.name}-fold{fold}"), backend, run_dir, log)
        evaluate_once(run_dir, fold_dir / "eval", score_workers)
    return write_summary(out, folds, sites)


def fold_evaluations(out: Path, folds: dict[str, int]) -> dict[int, Path]:
    """Each fold's evaluation folder in a cross-validation folder."""
    return {fold: out / f"fold-{fold}" / "eval" for fold in sorted(set(folds.values()))}


def fold_rows(evaluations: dict[int, Path]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every fold's per-subject rows (floats), and each method's kind."""
    rows, kinds = [], {}
    for folder in evaluations.values():
        with open(folder / "per_subject.csv", newline="") as handle:
            for raw in csv.DictReader(handle):
                rows.append({k: (v if k in ("subject", "method") else float(v)) for k, v in raw.items() if v != ""})
        summary = (folder / "summary.json").read_text()
        for method, entry in json.loads(summary)["methods"].items():
            kinds[method] = entry["kind"]
    return rows, kinds


def result_of_rows(rows: list[dict[str, Any]], kinds: dict[str, str], subjects: list[str]) -> EvaluationResult:
    methods = [m for m in kinds if kinds[m] == "run"] + [m for m in kinds if kinds[m] == "baseline"]
    return finalize(EvaluationResult(methods=methods, kinds=kinds, subjects=subjects,
                                     rows=[r for r in rows if r["subject"] in set(subjects)]))


def write_summary(out: Path, folds: dict[str, int], sites: dict[str, str | None]) -> dict[str, Any]:
    """The pooled held-out subjects of all folds (:func:`write_pooled_tables`) and the figure of
    typical held-out subjects."""
    result, summary = write_pooled_tables(out, folds, sites, fold_evaluations(out, folds))
    heldout_figure(out, folds, sites, result)
    return summary


def write_pooled_tables(out: Path, folds: dict[str, int], sites: dict[str, str | None],
                        evaluations: dict[int, Path]) -> tuple[EvaluationResult, dict[str, Any]]:
    """The pooled held-out subjects of the folds' ``evaluations`` (one evaluation folder per
    fold, wherever it lies), written to ``out`` by :func:`write_subject_tables`."""
    rows, kinds = fold_rows(evaluations)
    check_every_subject_scored(out, rows, folds)
    return write_subject_tables(out, folds, sites, rows, kinds)


def check_every_subject_scored(where: Path, rows: list[dict[str, Any]], folds: dict[str, int]) -> None:
    """The folds' rows score exactly the cross-validation's subjects."""
    scored = sorted({r["subject"] for r in rows})
    if scored != sorted(folds):
        raise MrsynthError(f"{where}: the folds scored {len(scored)} subjects, expected {len(folds)}")


def write_subject_tables(out: Path, folds: dict[str, int], sites: dict[str, str | None],
                         rows: list[dict[str, Any]], kinds: dict[str, str], context: dict[str, Any] | None = None,
                         preamble: str = "") -> tuple[EvaluationResult, dict[str, Any]]:
    """One row per held-out subject and method as tables (summary.csv/json with ``context``,
    per_subject.csv, paired_tests.csv), folds.csv, and summary.md (``preamble``, then the means
    overall and per site), written to ``out``."""
    subjects = sorted(folds)
    result = result_of_rows(rows, kinds, subjects)
    by_site = {site: result_of_rows(rows, kinds, sorted(s for s in subjects if (sites[s] or "") == site))
               for site in sorted({s or "" for s in sites.values()})}
    context = {"cross_validation": {"folds": len(set(folds.values())), "subjects": len(subjects),
                                    "per_site": {site or "(none)": len(r.subjects) for site, r in by_site.items()}},
               **(context or {})}
    out.mkdir(parents=True, exist_ok=True)
    write_tables(result, out, context)
    atomic_write_text(out / "folds.csv", "subject,site,fold\n" + "".join(
        f"{s},{sites[s] or ''},{folds[s]}\n" for s in subjects))
    atomic_write_text(out / "summary.md", preamble + summary_markdown(result, by_site, folds))
    return result, {"subjects": len(subjects), "methods": {m: result.summary[m] for m in result.methods},
                    "sites": {site or "(none)": {m: r.summary[m] for m in r.methods} for site, r in by_site.items()}}


FIGURE_SITES = 3


def figure_subjects(result: EvaluationResult, sites: dict[str, str | None]) -> list[tuple[str, str, float]]:
    """(site, subject, psnr_z) of the largest sites' median held-out subjects by the run's
    psnr_z (the lower middle one of an even count): typical cases, neither the best nor the worst."""
    method = result.methods[0]
    counts: dict[str, int] = {}
    for subject in result.subjects:
        counts[sites[subject] or ""] = counts.get(sites[subject] or "", 0) + 1
    chosen = []
    for site in sorted(counts, key=lambda s: (-counts[s], s))[:FIGURE_SITES]:
        members = sorted((r["psnr_z"], r["subject"]) for r in result.rows
                         if r["method"] == method and (sites[r["subject"]] or "") == site)
        score, subject = members[(len(members) - 1) // 2]
        chosen.append((site, subject, score))
    return chosen


def heldout_panels(evaluations: dict[int, Path], folds: dict[str, int], sites: dict[str, str | None],
                   result: EvaluationResult, count: int = FIGURE_SITES) -> list[dict[str, Any]]:
    """The :func:`figure_subjects` as their folds' runs synthesized them (the evaluation's NIfTI;
    each fold's evaluation folder beside its ``run``, as ``cross-validate`` and ``learning-curve``
    write them): per subject ``site``, ``subject``, ``fold``, ``psnr_z`` and the volumes
    :func:`~mrsynth.evaluation.figures.subjects_rows` draws; the first ``count`` sites."""
    from mrsynth.data.contract import read_contract
    from mrsynth.data.io import read_nifti
    from mrsynth.data.preprocess import load_volume
    from mrsynth.evaluation.runner import safe_name

    panels = []
    for site, subject, score in figure_subjects(result, sites)[:count]:
        run_dir = evaluations[folds[subject]].parent / "run"
        cfg = runs.load_run_config(run_dir)
        files = next(f for f in available_pairs(cfg.data) if f.subject == subject)
        volume = load_volume(files, read_contract(run_dir).with_learned_normalization(cfg.data))
        name = f"{safe_name(subject)}_{safe_name(result.methods[0])}_T2.nii.gz"
        pred, _ = read_nifti(evaluations[folds[subject]] / "nifti" / name)
        panels.append({"site": site, "subject": subject, "fold": folds[subject], "psnr_z": score,
                       "t1": volume.t1, "t2": volume.t2, "pred": pred, "mask": volume.mask,
                       "voxel_size": volume.geometry.voxel_size})
    return panels


def heldout_figure(out: Path, folds: dict[str, int], sites: dict[str, str | None], result: EvaluationResult) -> Path:
    """``heldout_subjects.png``: the :func:`heldout_panels`, one row each."""
    from mrsynth.evaluation.figures import subjects_rows

    panels = [{**p, "title": f"{p['subject']}\n{p['site'] or '(no site)'}, fold {p['fold']}: "
                             f"psnr_z {p['psnr_z']:.1f} dB"}
              for p in heldout_panels(fold_evaluations(out, folds), folds, sites, result)]
    return subjects_rows(panels, out / "heldout_subjects.png")


def read_cross_validation(out: Path) -> tuple[dict[str, int], dict[str, str | None], EvaluationResult]:
    """A finished cross-validation folder's folds, sites and pooled result (as ``write_summary`` pools it)."""
    subjects = json.loads((Path(out) / CV_FILE).read_text())["subjects"]
    folds = {s: v["fold"] for s, v in subjects.items()}
    sites = {s: v["site"] for s, v in subjects.items()}
    return folds, sites, pooled_result(fold_evaluations(Path(out), folds), sorted(folds))


def pooled_result(evaluations: dict[int, Path], subjects: list[str]) -> EvaluationResult:
    """The ``subjects``' rows of the folds' evaluation folders, as one result."""
    return result_of_rows(*fold_rows(evaluations), subjects)


def _cell(stats: dict[str, Any]) -> str:
    if stats["n"] < 2:
        return format_number(stats["mean"])
    return f"{format_number(stats['mean'])} [{format_number(stats['ci_low'])}, {format_number(stats['ci_high'])}]"


def summary_markdown(result: EvaluationResult, by_site: dict[str, EvaluationResult], folds: dict[str, int]) -> str:
    """Mean [95% CI] per method and metric over all held-out subjects, then per site."""
    metrics = [m for m in SUMMARY_METRICS if m in result.metrics]
    lines = [f"# Cross-validation: {len(set(folds.values()))} folds, {len(folds)} subjects, each held out once",
             "", "Mean [95% CI] over the held-out subjects (CI: t from 10 subjects on, bootstrap below, "
             "clipped to the metric's range).", "",
             "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [f"| {m} | " + " | ".join(_cell(result.summary[m][k]) for k in metrics) + " |" for m in result.methods]
    lines += ["", "## Per site (mean [95% CI]; n subjects)", "",
              "| site | n | method | " + " | ".join(metrics) + " |", "|---|---|---|" + "---|" * len(metrics)]
    for site, site_result in by_site.items():
        for m in site_result.methods:
            lines.append(f"| {site or '(none)'} | {len(site_result.subjects)} | {m} | "
                         + " | ".join(_cell(site_result.summary[m][k]) for k in metrics) + " |")
    return "\n".join(lines) + "\n"
