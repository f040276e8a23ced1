"""The plain model (no 2.5D input, no scanner augmentation; PyTorch, seed 0) against the
recommended variant (JAX, seeds 0-2), both 3000 steps, on each fold the plain model has a point:
per fold the two runs' mean psnr_z/ssim_z, the recommended seeds' range, and the patients the
plain model is below the recommended seeds' mean on; over all the folds' patients, the paired
difference (plain minus the recommended seeds' mean per patient) with a 95% t interval, each
fold's mean difference with a sign-flip test over the folds, and both models' margins over the
better baseline as evaluate fits it since 08988bb (all of a fold's training patients:
../../baseline-fit-2026-12-07/baselines_all_training.csv). Runs are compared with runs, so the
differences do not involve the baselines. Run from this folder: python plain_vs_recommended.py"""
import csv
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, "../../../../benchmarks")
sys.path.insert(0, "../../../..")
from lever_sweep import scored_evaluation  # noqa: E402
from mrsynth.evaluation.stats import sign_flip_test  # noqa: E402

HERE = Path(".")
METRICS = ("psnr_z", "ssim_z")
PLAIN, RECOMMENDED, SEEDS = "torch-plain-3000", "steps-3000", (0, 1, 2)


def run_rows(variant: str, fold: int, seed: int) -> dict[str, dict[str, float]] | None:
    """Subject -> the run's metrics in a point's evaluation (None while the point is missing)."""
    found = scored_evaluation(HERE, variant, fold, seed)
    if found is None:
        return None
    with open(found / "per_subject.csv", newline="") as handle:
        return {r["subject"]: {m: float(r[m]) for m in METRICS}
                for r in csv.DictReader(handle) if r["method"] in ("jax", "torch")}


baselines = {}
with open("../../baseline-fit-2026-12-07/baselines_all_training.csv", newline="") as handle:
    for r in csv.DictReader(handle):
        baselines.setdefault(r["subject"], {})[r["method"]] = {m: float(r[m]) for m in METRICS}

plain, recommended, fold_diffs, folds_done = {}, {}, {m: [] for m in METRICS}, []
for fold in range(5):
    rows = run_rows(PLAIN, fold, 0)
    if rows is None:
        continue
    seeds = [run_rows(RECOMMENDED, fold, s) for s in SEEDS]
    folds_done.append(fold)
    cells = []
    for metric in METRICS:
        p = np.array([rows[s][metric] for s in rows])
        per_seed = [np.mean([seed[s][metric] for s in rows]) for seed in seeds]
        r = np.array([np.mean([seed[s][metric] for seed in seeds]) for s in rows])
        fold_diffs[metric].append((p - r).mean())
        cells.append(f"{metric} plain {p.mean():.3f}, recommended seeds {' / '.join(f'{v:.3f}' for v in per_seed)} "
                     f"(range {max(per_seed) - min(per_seed):.3f}), plain minus seeds' mean {(p - r).mean():+.3f}, "
                     f"plain below it on {int((p < r).sum())} of {len(p)}")
    print(f"fold {fold} ({len(rows)} patients): " + "; ".join(cells))
    for s in rows:
        plain[s] = rows[s]
        recommended[s] = {m: np.mean([seed[s][m] for seed in seeds]) for m in METRICS}

print(f"\nfolds {folds_done}, {len(plain)} patients")
for metric in METRICS:
    d = np.array([plain[s][metric] - recommended[s][metric] for s in plain])
    lo, hi = stats.t.interval(0.95, len(d) - 1, d.mean(), stats.sem(d)) if len(d) > 1 else (np.nan, np.nan)
    better = max(("linear", "histmatch"), key=lambda b: np.mean([baselines[s][b][metric] for s in plain]))
    base = np.array([baselines[s][better][metric] for s in plain])
    p_margin = np.array([plain[s][metric] for s in plain]) - base
    r_margin = np.array([recommended[s][metric] for s in plain]) - base
    folds = np.array(fold_diffs[metric])
    flip = f", sign-flip p = {sign_flip_test(folds)['p']:.3f} over {len(folds)} folds" if len(folds) > 1 else ""
    print(f"{metric}: plain minus recommended {d.mean():+.3f} [95% t CI {lo:+.3f}, {hi:+.3f}], plain below on "
          f"{int((d < 0).sum())} of {len(d)}; per fold {', '.join(f'{v:+.3f}' for v in folds)}{flip}; "
          f"margin over {better}: plain {p_margin.mean():+.3f}, recommended (seeds' mean) {r_margin.mean():+.3f}")
