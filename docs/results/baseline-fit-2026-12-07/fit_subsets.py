"""How much the baselines' fit subset moves their held-out scores: per fold of the 5-fold CV,
fit linear and histmatch on (a) the first 20 training subjects by id (the code at 14828aa),
(b) 20 taken in turn from each site, (c) all training subjects; score each fold's held-out.
Run at 14828aa, from the repository root: python docs/results/baseline-fit-2026-12-07/fit_subsets.py fit_subsets.csv
then python docs/results/baseline-fit-2026-12-07/fit_subsets_compare.py > fit_subsets.txt"""
import csv, sys, time
import numpy as np
from mrsynth.config import load_config, with_absolute_paths
from mrsynth.experiments.crossval import site_folds
from mrsynth.subjects import available_pairs
from mrsynth.data.preprocess import load_volume
from mrsynth.data.contract import output_t2_range
from mrsynth.data.normalization import NormStats
from mrsynth.data.splits import spread_over_sites
from mrsynth.evaluation.baselines import fit_baselines
from mrsynth.evaluation.metrics import volume_metrics, TargetCache

cfg = with_absolute_paths(load_config("configs/brats_2d.yaml", ["data.cache_dir=/work/main/.cache/mrsynth"]))
sites, folds = site_folds(cfg, 5, 0)
files = {f.subject: f for f in available_pairs(cfg.data)}
out = open(sys.argv[1], "w", newline="")
w = csv.writer(out); w.writerow(["fold", "fit", "subject", "method", "psnr", "ssim", "psnr_z", "ssim_z"])
for fold in range(5):
    train = [files[s] for s in sorted(s for s, f in folds.items() if f != fold)]
    held = [files[s] for s in sorted(s for s, f in folds.items() if f == fold)]
    vols = {f.subject: load_volume(f, cfg.data) for f in train}
    ref = NormStats(offset=float(np.mean([v.t2_stats.offset for v in vols.values()])),
                    scale=float(np.mean([v.t2_stats.scale for v in vols.values()])))
    lo, hi = output_t2_range(list(vols.values()), ref)
    fits = {"first20": train[:20], "spread20": spread_over_sites(train, 20), "all": train}
    fitted = {}
    for name, subset in fits.items():
        t = time.time()
        fitted[name] = fit_baselines([vols[f.subject] for f in subset], ["linear", "histmatch"])
        print(fold, name, [f.subject for f in subset][:3], f"{time.time()-t:.0f}s", flush=True)
    for f in held:
        vol = load_volume(f, cfg.data)
        inside = vol.mask > 0
        for name, bl in fitted.items():
            for m, b in bl.items():
                pred = b.predict(vol)
                pred = np.where(inside, np.clip(pred, lo, hi), pred)
                r = volume_metrics(pred, np.ascontiguousarray(vol.t2), np.ascontiguousarray(vol.mask), cfg.eval.data_range, None, TargetCache())
                w.writerow([fold, name, f.subject, m, r["psnr"], r["ssim"], r["psnr_z"], r["ssim_z"]]); out.flush()
        print(fold, f.subject, flush=True)
