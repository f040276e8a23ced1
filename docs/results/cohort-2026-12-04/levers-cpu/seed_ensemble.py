"""The plain model's three training seeds averaged voxel by voxel (a seed ensemble), against the
seeds alone and against the recommended variant (JAX, seeds 0-2, each patient the seeds' mean).

A seed ensemble is what a user can do with three trained runs at predict time, so this asks
whether it buys what the seed spread costs. It reads the synthesized volumes that each point's
evaluate wrote (``eval/nifti``, normalized T2 units, clipped, zero outside the mask; too large to
commit) from the sweep's ``--out`` folders, rescores every seed with evaluate's own
``load_volume`` and ``volume_metrics`` and stops unless it equals the committed per_subject.csv,
then scores the mean of the three. Sharpness (gradient-magnitude ratio) is printed beside the
metrics, since an average is smoother than its parts. Run from this folder:
python seed_ensemble.py SWEEP_OUT [SWEEP_OUT ...] > seed_ensemble.txt (writes seed_ensemble.csv)"""
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "../../../../benchmarks")
sys.path.insert(0, "../../../..")
from lever_sweep import point_dir, run_scores  # noqa: E402
from mrsynth.data.contract import read_contract  # noqa: E402
from mrsynth.data.io import read_nifti  # noqa: E402
from mrsynth.data.preprocess import load_volume  # noqa: E402
from mrsynth.evaluation.metrics import TargetCache, volume_metrics  # noqa: E402
from mrsynth.evaluation.runner import load_run, split_files  # noqa: E402
from mrsynth.evaluation.stats import sign_flip_test, summarize  # noqa: E402

HERE = Path(".")
METRICS = ("psnr_z", "ssim_z", "sharpness")
PLAIN, RECOMMENDED, SEEDS, FOLDS = "torch-plain-3000", "steps-3000", (0, 1, 2), 5


def sweep_point(outs: list[Path], fold: int, seed: int) -> Path:
    """The point's ``seed-S/n-N`` folder (its run and eval) in whichever sweep folder holds it."""
    for out in outs:
        found = sorted((point_dir(out, PLAIN, fold, seed) / f"seed-{seed}").glob("n-*/eval/nifti"))
        if found:
            return found[0].parent.parent
    raise SystemExit(f"error: {PLAIN} fold {fold} seed {seed}: no eval/nifti in {', '.join(map(str, outs))}")


def score_fold(outs: list[Path], fold: int) -> list[dict[str, float | str]]:
    points = {s: sweep_point(outs, fold, s) for s in SEEDS}
    spec = load_run(points[0] / "run")
    data_cfg = read_contract(points[0] / "run").with_learned_normalization(spec.cfg.data)
    committed = {s: run_scores(HERE, PLAIN, fold, s, METRICS) for s in SEEDS}
    recommended = [run_scores(HERE, RECOMMENDED, fold, s, METRICS) for s in SEEDS]
    rows = []
    for files in split_files(spec.cfg)["test"]:
        volume, cache = load_volume(files, data_cfg), TargetCache()
        preds = {s: read_nifti(points[s] / "eval" / "nifti" / f"{files.subject}_torch_T2.nii.gz",
                               what="prediction")[0] for s in SEEDS}
        row: dict[str, float | str] = {"fold": fold, "subject": files.subject}
        for s, pred in preds.items():
            got = volume_metrics(pred, volume.t2, volume.mask, spec.cfg.eval.data_range, cache=cache)
            for m in METRICS:
                if not np.isclose(got[m], committed[s][files.subject][m], rtol=0, atol=1e-9):
                    raise SystemExit(f"error: {files.subject} seed {s}: {m} {got[m]} is not evaluate's "
                                     f"{committed[s][files.subject][m]}")
                row[f"seed{s}_{m}"] = got[m]
        mean = np.mean([preds[s] for s in SEEDS], axis=0)
        got = volume_metrics(mean, volume.t2, volume.mask, spec.cfg.eval.data_range, cache=cache)
        for m in METRICS:
            row[f"ensemble_{m}"] = got[m]
            row[f"recommended_{m}"] = float(np.mean([r[files.subject][m] for r in recommended]))
        rows.append(row)
    return rows


def t_interval(d: np.ndarray) -> str:
    ci = summarize(d, interval="t")
    return f"{ci['mean']:+.3f} [95% t CI {ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"


def main(outs: list[Path]) -> None:
    rows = [row for fold in range(FOLDS) for row in score_fold(outs, fold)]
    with open("seed_ensemble.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} patients, every seed's rescoring equal to evaluate's per_subject.csv")
    for m in METRICS:
        seeds = np.array([[r[f"seed{s}_{m}"] for s in SEEDS] for r in rows])
        ens = np.array([r[f"ensemble_{m}"] for r in rows])
        rec = np.array([r[f"recommended_{m}"] for r in rows])
        folds = np.array([r["fold"] for r in rows])
        fold_diffs = np.array([(ens - rec)[folds == f].mean() for f in range(FOLDS)])
        print(f"{m}: seeds {' / '.join(f'{v:.3f}' for v in seeds.mean(0))}, ensemble {ens.mean():.3f}, "
              f"recommended (seeds' mean) {rec.mean():.3f}")
        print(f"  ensemble minus the plain seeds' mean {t_interval(ens - seeds.mean(1))}, above it on "
              f"{int((ens > seeds.mean(1)).sum())} of {len(ens)}, above every seed on {int((ens > seeds.max(1)).sum())}")
        print(f"  ensemble minus recommended {t_interval(ens - rec)}, above on {int((ens > rec).sum())} of "
              f"{len(ens)}; per fold {', '.join(f'{v:+.3f}' for v in fold_diffs)}, "
              f"sign-flip p = {sign_flip_test(fold_diffs)['p']:.4f} over {FOLDS} folds")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python seed_ensemble.py SWEEP_OUT [SWEEP_OUT ...]")
    main([Path(p) for p in sys.argv[1:]])
