"""Each site's margin of the U-Net over the better baseline (the baseline with the higher site
mean), with a 95% t interval over the site's patients of U-Net minus that baseline, from a pooled
cross-validation folder (cv-seed-<S>/ or cv-seeds/; the run trained by either backend); "won on": patients above that baseline, "above
both": above the better of the two for that patient. Sites with fewer than 3 patients are left out.
python site_margins.py steps-3000/cv-seeds"""
import collections
import csv
import sys

import numpy as np
from scipy import stats

folder = sys.argv[1]
site = {r["subject"]: r["site"] for r in csv.DictReader(open(f"{folder}/folds.csv"))}
rows = collections.defaultdict(dict)
for r in csv.DictReader(open(f"{folder}/per_subject.csv")):
    rows[r["subject"]][r["method"]] = r
run = next(m for m in next(iter(rows.values())) if m not in ("identity", "linear", "histmatch"))  # jax or torch
for group in ["all", *sorted(set(site.values()))]:
    subjects = [s for s in rows if group in ("all", site[s])]
    if len(subjects) < 3:
        continue
    for metric in ("psnr_z", "ssim_z"):
        value = {m: np.array([float(rows[s][m][metric]) for s in subjects]) for m in (run, "linear", "histmatch")}
        base = max(("linear", "histmatch"), key=lambda m: value[m].mean())
        d = value[run] - value[base]
        lo, hi = stats.t.interval(0.95, len(d) - 1, d.mean(), stats.sem(d))
        print(f"{group:7s} n={len(d):2d} {metric}: U-Net {value[run].mean():.3f}, {base} {value[base].mean():.3f}, "
              f"margin {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}], won on {int((d > 0).sum())}, "
              f"above both baselines on {int((value[run] > np.maximum(value['linear'], value['histmatch'])).sum())}")
