"""The README's figure: held-out real patients from a cross-validation, and a phantom test subject.

Rows: the median held-out subject (by the run's psnr_z) of each of the largest sites of a
cross-validation, as its fold's run synthesized it, then the first test subject of a phantom run
(the default ``python run.py --backend jax``), synthesized by that run exactly as ``evaluate`` and
``predict`` do. Columns: T1 | synthesized T2 | real T2 | |error|. The cross-validation is a
``cross-validate`` folder, or one variant and seed of a ``benchmarks/lever_sweep.py`` folder with a
point on every fold (pooled as the sweep pools it into ``cv-seed-<S>``); ``--volumes`` reads the
chosen subjects' synthesized volumes from a same-seed rerun of their folds when that folder keeps
only scores. Each cohort row's title gives the psnr_z of the volume it shows.

    python benchmarks/readme_figure.py --cv CV_DIR --demo-run RUN --out docs/results/<folder>/readme_figure.png
    python benchmarks/readme_figure.py --sweep SWEEP_OUT --variant recommended --seed 0 \\
        --config configs/brats_2d.yaml [--volumes RERUN_OUT] --demo-run RUN --out docs/results/<folder>/readme_figure.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrsynth import backend as backends  # noqa: E402
from mrsynth import runs  # noqa: E402
from mrsynth.data.contract import read_contract  # noqa: E402
from mrsynth.data.preprocess import load_volume  # noqa: E402
from mrsynth.evaluation.figures import subjects_rows  # noqa: E402
from mrsynth.evaluation.metrics import scale_invariant_metrics  # noqa: E402
from mrsynth.evaluation.results import EvaluationResult  # noqa: E402
from mrsynth.experiments.crossval import (figure_subjects, fold_evaluations, heldout_panels,  # noqa: E402
                                         pooled_result, read_cross_validation)
from mrsynth.inference.grid import synthesize_on_model_grid  # noqa: E402
from mrsynth.subjects import subject_splits  # noqa: E402


def cross_validation(args: argparse.Namespace) -> tuple[dict[int, Path], dict[str, int], dict[str, str | None],
                                                        EvaluationResult]:
    """The folds' evaluation folders, the subjects' folds and sites, and the pooled result."""
    if args.cv:
        folds, sites, result = read_cross_validation(args.cv)
        return fold_evaluations(args.cv, folds), folds, sites, result
    from lever_sweep import scored_evaluations, sweep_folds

    sites, folds = sweep_folds(args.config, args.k)
    evaluations = scored_evaluations(args.sweep, args.variant, args.seed, args.k)
    if evaluations is None:
        raise SystemExit(f"error: {args.sweep}: {args.variant} seed {args.seed} lacks a scored point on some fold")
    return evaluations, folds, sites, pooled_result(evaluations, sorted(folds))


def volume_evaluations(args: argparse.Namespace, scored: dict[int, Path]) -> dict[int, Path]:
    """Where the runs and synthesized volumes are read: the scored folds' own evaluations, or with
    ``--volumes`` the points of another sweep folder (same variant and seed) that has them."""
    if not args.volumes:
        return scored
    from lever_sweep import scored_evaluation

    found = {fold: scored_evaluation(args.volumes, args.variant, fold, args.seed) for fold in scored}
    return {fold: folder for fold, folder in found.items() if folder}


def cohort_rows(args: argparse.Namespace) -> list[dict]:
    """The median subjects of the scored cross-validation; each title gives the psnr_z of the
    volume shown (the fold's own, or with ``--volumes`` a rerun's)."""
    evaluations, folds, sites, result = cross_validation(args)
    volumes = volume_evaluations(args, evaluations)
    chosen = {folds[subject] for _, subject, _ in figure_subjects(result, sites)[:args.sites]}
    if not chosen <= set(volumes):
        raise SystemExit(f"error: {args.volumes or args.sweep}: no run with synthesized volumes for fold(s) "
                         f"{sorted(chosen - set(volumes))}")
    rows = []
    for panel in heldout_panels(volumes, folds, sites, result, args.sites):
        score = scale_invariant_metrics(panel["pred"], panel["t2"], panel["mask"] > 0)["psnr_z"]
        rows.append({**panel, "title": f"held-out patient, {panel['site']}\n(its site's median): psnr_z {score:.1f} dB"})
    return rows


def phantom_row(run_dir: Path) -> dict:
    cfg = runs.load_run_config(run_dir)
    contract = read_contract(run_dir)
    files = subject_splits(cfg.data)["test"][0]
    volume = load_volume(files, contract.with_learned_normalization(cfg.data))
    predictor = backends.get_backend(runs.read_run_info(run_dir)["backend"]).load_predictor(run_dir, "best")
    pred = synthesize_on_model_grid(volume.t1, volume.mask, volume.geometry.voxel_size, predictor, cfg.data,
                                    cfg.eval, contract)[0].t2
    score = scale_invariant_metrics(pred, volume.t2, volume.mask > 0)["psnr_z"]
    return {"title": f"phantom test subject {files.subject}\n(demo run): psnr_z {score:.1f} dB",
            "t1": volume.t1, "t2": volume.t2, "pred": pred, "mask": volume.mask,
            "voxel_size": volume.geometry.voxel_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cv", type=Path, help="a cross-validate folder")
    source.add_argument("--sweep", type=Path, help="a lever_sweep.py --out folder (with --variant, --seed, --config)")
    parser.add_argument("--variant", default="recommended", help="the sweep's variant (default recommended)")
    parser.add_argument("--seed", type=int, default=0, help="the sweep's seed (default 0)")
    parser.add_argument("--config", default="configs/brats_2d.yaml", help="the sweep's --config (its folds)")
    parser.add_argument("--k", type=int, default=5, help="the sweep's number of folds (default 5)")
    parser.add_argument("--volumes", type=Path,
                        help="with --sweep: another sweep folder whose points of the same variant and seed hold the "
                             "runs and synthesized volumes (a same-seed rerun of the figure's folds, when --sweep "
                             "is a results folder that keeps only the scores)")
    parser.add_argument("--demo-run", type=Path, required=True, help="a run trained on the phantom")
    parser.add_argument("--sites", type=int, default=3, help="cohort rows: the largest sites' medians (default 3)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()
    path = subjects_rows([*cohort_rows(args), phantom_row(args.demo_run)], args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
