"""The plain model (no 2.5D input, no scanner augmentation; PyTorch) against the recommended
variant (JAX, seeds 0-2), both 3000 steps. Per fold and plain seed: the two models' mean
psnr_z/ssim_z, the recommended seeds' range, and the patients the plain run is below the
recommended seeds' mean on. Pooled over the plain seeds that have every fold: the paired
difference per patient (plain seeds' mean minus the recommended seeds' mean) with a 95% t
interval; each fold's mean difference with a sign-flip test over the folds; each (fold, seed)
run's difference from the recommended run of the same fold and seed with a sign-flip test over
those runs (the lever table's run-level test; which plain seed meets which recommended seed is
arbitrary, and any fixed pairing keeps the test exact); both models' margins over the better
baseline as evaluate fits it since 08988bb (all of a fold's training patients:
../../baseline-fit-2026-12-07/baselines_all_training.csv). Runs are compared with runs, so the
differences do not involve the baselines. Run from this folder: python plain_vs_recommended.py"""
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "../../../../benchmarks")
sys.path.insert(0, "../../../..")
from lever_sweep import point_seeds, run_scores, scored_evaluations  # noqa: E402
from mrsynth.evaluation.stats import sign_flip_test, summarize  # noqa: E402

HERE = Path(".")
METRICS = ("psnr_z", "ssim_z")
PLAIN, RECOMMENDED, SEEDS, FOLDS = "torch-plain-3000", "steps-3000", (0, 1, 2), 5


def mean_over(runs: list[dict[str, dict[str, float]]], subject: str, metric: str) -> float:
    return float(np.mean([run[subject][metric] for run in runs]))


baselines = {}
with open("../../baseline-fit-2026-12-07/baselines_all_training.csv", newline="") as handle:
    for r in csv.DictReader(handle):
        baselines.setdefault(r["subject"], {})[r["method"]] = {m: float(r[m]) for m in METRICS}

plain_seeds = point_seeds(HERE, PLAIN)
complete = [s for s in plain_seeds if scored_evaluations(HERE, PLAIN, s, FOLDS)]
plain, recommended = {}, {}
fold_diffs, run_diffs = {m: [] for m in METRICS}, {m: [] for m in METRICS}
for fold in range(FOLDS):
    seeds = [run_scores(HERE, RECOMMENDED, fold, s, METRICS) for s in SEEDS]
    plain_runs = {s: rows for s in plain_seeds if (rows := run_scores(HERE, PLAIN, fold, s, METRICS))}
    for plain_seed, rows in plain_runs.items():
        cells = []
        for metric in METRICS:
            p = np.array([rows[s][metric] for s in rows])
            per_seed = [np.mean([seed[s][metric] for s in rows]) for seed in seeds]
            r = np.array([mean_over(seeds, s, metric) for s in rows])
            cells.append(f"{metric} plain {p.mean():.3f}, recommended seeds {' / '.join(f'{v:.3f}' for v in per_seed)} "
                         f"(range {max(per_seed) - min(per_seed):.3f}), plain minus seeds' mean {(p - r).mean():+.3f}, "
                         f"plain below it on {int((p < r).sum())} of {len(p)}")
            if plain_seed in complete:
                run_diffs[metric].append(p.mean() - per_seed[SEEDS.index(plain_seed)])
        print(f"fold {fold}, plain seed {plain_seed} ({len(rows)} patients): " + "; ".join(cells))
    pooled = [plain_runs[s] for s in complete]
    if not pooled:
        continue
    for s in pooled[0]:
        plain[s] = {m: mean_over(pooled, s, m) for m in METRICS}
        recommended[s] = {m: mean_over(seeds, s, m) for m in METRICS}
    for metric in METRICS:
        fold_diffs[metric].append(np.mean([plain[s][metric] - recommended[s][metric] for s in pooled[0]]))

print(f"\nplain seeds with every fold: {complete}; {len(plain)} patients, each the mean of those seeds' runs")
for metric in METRICS:
    d = np.array([plain[s][metric] - recommended[s][metric] for s in plain])
    ci = summarize(d, interval="t")
    lo, hi = ci["ci_low"], ci["ci_high"]
    better = max(("linear", "histmatch"), key=lambda b: np.mean([baselines[s][b][metric] for s in plain]))
    base = np.array([baselines[s][better][metric] for s in plain])
    p_margin = np.array([plain[s][metric] for s in plain]) - base
    r_margin = np.array([recommended[s][metric] for s in plain]) - base
    folds, runs = np.array(fold_diffs[metric]), np.array(run_diffs[metric])
    flip = f", sign-flip p = {sign_flip_test(folds)['p']:.4f} over {len(folds)} folds" if len(folds) > 1 else ""
    run_flip = (f"; per (fold, seed) run {runs.mean():+.3f}, below on {int((runs < 0).sum())} of {len(runs)}, "
                f"sign-flip p = {sign_flip_test(runs)['p']:.4f} over {len(runs)} runs") if len(complete) > 1 else ""
    print(f"{metric}: plain minus recommended {d.mean():+.3f} [95% t CI {lo:+.3f}, {hi:+.3f}], plain below on "
          f"{int((d < 0).sum())} of {len(d)}; per fold {', '.join(f'{v:+.3f}' for v in folds)}{flip}{run_flip}; "
          f"margin over {better}: plain {p_margin.mean():+.3f}, recommended (seeds' mean) {r_margin.mean():+.3f}")
