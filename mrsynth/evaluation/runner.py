"""Evaluate trained runs and the baselines on held-out subjects and write the report directory.

Shared by ``run.py evaluate`` (one run) and ``run.py compare`` (several runs): every method sees
the same preprocessed volumes, is scored by the same metrics, and lands in one report.
"""
from __future__ import annotations

import dataclasses

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import mrsynth
from mrsynth import backend as backends
from mrsynth.backend import Predictor
from mrsynth.config import Config, DataConfig
from mrsynth.data.discovery import SubjectFiles
from mrsynth.data.splits import evenly_spaced
from mrsynth.console import progress_enabled
from mrsynth.errors import ConfigError, DataError, MrsynthError
from mrsynth.evaluation import figures
from mrsynth.evaluation.baselines import BASELINE_MAX_TRAIN, Baseline, fit_baselines
from mrsynth.data.contract import read_contract
from mrsynth.inference.synthesis import NOTICE, SYNTHETIC_INTENT
from mrsynth.inference.grid import synthesize_on_model_grid
from mrsynth.evaluation.report import write_report
from mrsynth.evaluation.results import MAIN_METRICS, EvaluationResult, finalize, write_tables
from mrsynth.evaluation.scoring import subject_scorer
from mrsynth.fileio import atomic_dir
from mrsynth.reporting import format_number, text_table
from mrsynth import runs
from mrsynth.subjects import SUBJECT_CHOICES

FIGURE_SUBJECTS = 3  # subjects shown in the orthogonal-view panels
# Data settings that must agree for runs to be compared on the same volumes.
DATA_IDENTITY_KEYS = ("source", "root", "manifest", "t1_glob", "t2_glob", "mask_glob", "phantom_subjects",
                      "phantom_shape", "phantom_seed", "split_fractions", "split_seed", "train_subjects",
                      "val_subjects", "test_subjects", "mask", "normalization", "percentiles")
REPORT_MARKER = "summary.json"


@dataclass
class RunSpec:
    """A trained run to evaluate: its directory, resolved config, run.json and report label."""

    run_dir: Path
    cfg: Config
    info: dict[str, Any]
    which: str
    label: str = ""
    tta: str = "none"

    @property
    def backend(self) -> str:
        return str(self.info["backend"])


def evaluation_tag(normalization: str) -> str:
    """The NIfTI description of evaluate's synthetic T2 files: synthetic, and in the run's
    normalized T2 units (not T2 units as ``predict`` writes them), so that a viewer says which."""
    return f"mrsynth {mrsynth.__version__} {NOTICE} (T2w, {normalization} units)"


def load_run(run_dir: Path, which: str = "best", tta: str = "none", planes: str | None = None) -> RunSpec:
    """Read a run directory's config.yaml and run.json (clear errors when it is not a run);
    ``planes`` replaces the run's ``eval.planes``."""
    run_dir = Path(run_dir)
    info = runs.read_run_info(run_dir)
    if "backend" not in info:
        raise MrsynthError(f"{run_dir / runs.RUN_FILE}: no 'backend' recorded")
    cfg = runs.load_run_config(run_dir)
    if planes is not None:
        cfg.eval = dataclasses.replace(cfg.eval, planes=planes)
    return RunSpec(run_dir, cfg, info, which, tta=tta)


def label_runs(runs: list[RunSpec]) -> None:
    """Backend name when it identifies the run, else backend:run-directory-name."""
    backends = [r.backend for r in runs]
    for r in runs:
        r.label = r.backend if backends.count(r.backend) == 1 else f"{r.backend}:{r.run_dir.name}"


FRAMEWORK_TITLES = {"jax": "JAX", "torch": "PyTorch"}


def run_title(run: RunSpec) -> str:
    """What figures call a run: the model and its framework, e.g. "U-Net (JAX)" (plus the run's
    folder name when two runs share a framework)."""
    framework = FRAMEWORK_TITLES.get(run.backend, run.backend)
    return f"U-Net ({framework})" if run.label == run.backend else f"U-Net ({framework}, {run.run_dir.name})"


def _check_same_data(runs: list[RunSpec]) -> None:
    first = runs[0]
    for other in runs[1:]:
        for key in DATA_IDENTITY_KEYS:
            a, b = getattr(first.cfg.data, key), getattr(other.cfg.data, key)
            if a != b:
                raise ConfigError(
                    f"data.{key}: {first.run_dir} has {a!r} but {other.run_dir} has {b!r}; "
                    "runs must share data settings to be compared on the same subjects"
                )


def split_files(cfg: Config) -> dict[str, list]:
    """Discover the subjects of a config and split them as training did."""
    from mrsynth.subjects import subject_splits

    splits = subject_splits(cfg.data)
    splits["all"] = sorted((f for k in ("train", "val", "test") for f in splits[k]), key=lambda f: f.subject)
    return splits


def baseline_subjects(train_files: list[SubjectFiles]) -> list[SubjectFiles]:
    """The training subjects the baselines are fitted on: all of them up to ``BASELINE_MAX_TRAIN``,
    beyond it that many evenly spaced by id (each site's share kept)."""
    return evenly_spaced(train_files, BASELINE_MAX_TRAIN)


def fit_training_baselines(train_files: list[SubjectFiles], data_cfg: DataConfig) -> dict[str, Baseline]:
    """The baselines fitted on a run's :func:`baseline_subjects`, loaded one at a time."""
    from mrsynth.data.preprocess import load_volume

    if not train_files:
        raise DataError("data: no training subjects to fit the baselines on")
    return fit_baselines(load_volume(f, data_cfg) for f in baseline_subjects(train_files))


def safe_name(text: str) -> str:
    """A label or subject as a file-name part (how the report names its NIfTI outputs)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _run_context(run: RunSpec) -> dict[str, Any]:
    cfg = run.cfg.to_dict()
    return {
        "label": run.label, "backend": run.backend, "run_dir": str(run.run_dir), "checkpoint": run.which,
        "tta": run.tta,
        "status": run.info.get("status"), "steps_done": run.info.get("steps_done"),
        "model": cfg["model"], "train": cfg["train"], "data": cfg["data"], "eval": cfg["eval"],
        "versions": run.info.get("versions", {}),
    }


def _prepare_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report (atomic_dir replaces it whole)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_MARKER).exists())):
        raise MrsynthError(f"{out}: exists and is not an mrsynth report directory; choose another --out")


def evaluate_runs(
    runs: list[RunSpec],
    subjects: str,
    out: Path,
    predictors: list[Predictor] | None = None,
    title: str | None = None,
    convention: str = "neurological",
    score_workers: int = 0,
) -> tuple[EvaluationResult, Path]:
    """Synthesize the chosen split with every run and baseline, score, and write the report.

    ``predictors`` (one per run) defaults to each run's backend ``load_predictor(run_dir, which)``;
    ``convention``: the figures' left-right display (``views.CONVENTIONS``); ``score_workers``:
    processes that score subjects while the next is synthesized (``scoring.subject_scorer``).
    Returns the result and the path of report.html. The output folder appears only when complete.
    """
    if subjects not in SUBJECT_CHOICES:
        raise ConfigError(f"--subjects: {subjects!r} is not one of {', '.join(SUBJECT_CHOICES)}")
    if not runs:
        raise ConfigError("no run directories given")
    out = Path(out)
    _prepare_out_dir(out)
    label_runs(runs)
    _check_same_data(runs)
    cfg = runs[0].cfg
    splits = split_files(cfg)
    chosen = splits[subjects]
    if not chosen:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in splits.items() if k != "all")
        raise DataError(f"data: the {subjects} split is empty ({sizes}); choose another --subjects")
    if any(f.t2 is None for f in chosen):
        raise DataError(f"{next(f for f in chosen if f.t2 is None).t1}: evaluation needs a real T2 for every subject")
    contracts = [read_contract(r.run_dir) for r in runs]
    for run, contract in zip(runs, contracts):
        contract.check_planes(run.cfg.eval.planes, f"{run.run_dir}: eval.planes")
    if predictors is None:
        predictors = [backends.get_backend(r.backend).load_predictor(r.run_dir, r.which) for r in runs]

    from mrsynth.data.io import write_like
    from mrsynth.data.preprocess import load_volume

    data_cfg = contracts[0].with_learned_normalization(cfg.data)
    for run, contract in zip(runs[1:], contracts[1:]):
        if contract.with_learned_normalization(cfg.data) != data_cfg:
            raise ConfigError(f"{run.run_dir}: its nyul standard scales differ from {runs[0].run_dir}'s; "
                              "runs must share data settings to be compared on the same subjects")
    baselines = fit_training_baselines(splits["train"], data_cfg)
    methods = [r.label for r in runs] + list(baselines)
    titles = {**{r.label: run_title(r) for r in runs}, **{name: b.title for name, b in baselines.items()}}
    result = EvaluationResult(methods=methods, kinds={**{r.label: "run" for r in runs},
                                                      **{b: "baseline" for b in baselines}},
                              subjects=[f.subject for f in chosen], rows=[])
    with atomic_dir(out) as tmp, subject_scorer(score_workers) as scorer:
        figure_paths: dict[str, Path] = {}
        for index, files in enumerate(tqdm(chosen, desc=f"evaluate {subjects}", unit="subject",
                                               disable=not progress_enabled())):
            volume = load_volume(files, data_cfg)
            predictions: dict[str, np.ndarray] = {}
            inside = volume.mask > 0
            for run, predictor, contract in zip(runs, predictors, contracts):
                pred = synthesize_on_model_grid(volume.t1, volume.mask, volume.geometry.voxel_size, predictor,
                                                run.cfg.data, run.cfg.eval, contract, tta=run.tta)[0].t2
                predictions[run.label] = pred
                write_like(pred, volume.geometry,
                           tmp / "nifti" / f"{safe_name(files.subject)}_{safe_name(run.label)}_T2.nii.gz",
                           descrip=evaluation_tag(run.cfg.data.normalization),
                           intent_name=SYNTHETIC_INTENT)
            for name, baseline in baselines.items():  # clipped to the same range as the runs' outputs
                pred = baseline.predict(volume)
                predictions[name] = np.where(inside, np.clip(pred, *contracts[0].t2_range), pred)
            scorer.submit(files.subject, predictions, volume.t2, volume.mask, cfg.eval.data_range, volume.labels)
            if index < FIGURE_SUBJECTS:
                title_s = f"{files.subject}: T1, real T2, synthesized T2 and |error|"
                figure_paths[f"Subject {files.subject}"] = figures.subject_panel(
                    volume.t1, volume.t2, {titles[m]: p for m, p in predictions.items()}, volume.mask,
                    tmp / "figures" / f"subject_{safe_name(files.subject)}.png", title_s, convention,
                    voxel_size=volume.geometry.voxel_size)
        result.rows.extend(scorer.rows())
        finalize(result)
        context = {
            "title": title or f"mrsynth evaluation: {', '.join(r.label for r in runs)} vs baselines",
            "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "split": subjects,
            "split_sizes": {k: len(v) for k, v in splits.items() if k != "all"},
            "runs": [_run_context(r) for r in runs],
            "baselines": {name: b.description for name, b in baselines.items()},
            "baseline_train_subjects": len(baseline_subjects(splits["train"])),
            "data_range_note": (
                f"PSNR/NRMSE/SSIM data range R = {cfg.eval.data_range} (fixed by eval.data_range)"
                if cfg.eval.data_range is not None else
                "PSNR/NRMSE/SSIM data range R = max - min of the real T2 inside the mask, per subject "
                "(eval.data_range is unset); the value used is the data_range column of per_subject.csv. "
                "NRMSE = RMSE / R."
            ),
            "units": "normalized T2 units of each subject",
        }
        figure_paths["Metrics per subject"] = figures.metric_plot(
            {titles[m]: {k: result.values(m, k) for k in ("psnr", "ssim", "mae")} for m in methods},
            ("psnr", "ssim", "mae"), tmp / "figures" / "metrics_per_subject.png")
        logs = {titles[r.label]: figures.read_metrics_log(r.run_dir / "metrics.jsonl") for r in runs}
        if any(logs.values()):
            figure_paths["Training curves"] = figures.training_curves(logs, tmp / "figures" / "training_curves.png")
        write_tables(result, tmp, context)
        write_report(tmp, result, context, figure_paths)
    return result, out / "report.html"


def print_summary(result: EvaluationResult, report: Path) -> None:
    """A short table on stdout: mean of the main metrics per method."""
    metrics = [m for m in (*MAIN_METRICS, "psnr_z", "ssim_z", "sharpness") if m in result.metrics]
    rows = [[m, *(format_number(result.summary[m][k]["mean"]) for k in metrics)] for m in result.methods]
    print(text_table(["method", *metrics], rows))
    print(f"report: {report}")
