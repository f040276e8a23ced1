"""Is a site's small margin a weak model or a strong baseline? For each held-out patient of the
3000-step cross-validation (steps-3000/cv-seed-0): the U-Net's psnr_z/ssim_z, the better of the two
intensity baselines' (linear map, histogram matching; the better one per patient) and the margin;
per site the means (the margin with its 95% t interval over the site's patients), over the 43
patients the Pearson correlation of the baseline with the margin, and the linear map's own
correlation with the real T2 per site.
Run from this folder: python baseline_strength.py ../../../../../shared/data/brats18/manifest.csv"""
import sys

import numpy as np
from scipy import stats

import cv_patients


def t_interval(values: np.ndarray) -> str:
    """The mean's 95% Student-t interval, or nothing for a single patient."""
    if len(values) < 2:
        return ""
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return f"[{low:+.3f}, {high:+.3f}]"


subjects, sites, methods = cv_patients.load(sys.argv[1])
for metric in ("psnr_z", "ssim_z"):
    unet, baseline = cv_patients.unet_and_baseline(methods, subjects, metric)
    margin = unet - baseline
    r, p = stats.pearsonr(baseline, margin)
    print(f"{metric}: over {len(subjects)} patients, corr(better baseline, margin) r = {r:+.2f} (p = {p:.1g}), "
          f"corr(better baseline, U-Net) r = {stats.pearsonr(baseline, unet)[0]:+.2f}")
    print("| site | n | U-Net | better baseline | margin [95% t CI] |\n|---|---|---|---|---|")
    for name in cv_patients.site_order(sites):
        at = sites == name
        print(f"| {name} | {at.sum()} | {unet[at].mean():.3f} | {baseline[at].mean():.3f} | {margin[at].mean():+.3f} {t_interval(margin[at])} |")
    others = sites != "CBICA"
    print(f"| all but CBICA | {others.sum()} | {unet[others].mean():.3f} | {baseline[others].mean():.3f} | "
          f"{margin[others].mean():+.3f} |\n")
linear_r = np.array([float(methods[s]["linear"]["pearson"]) for s in subjects])
print("the linear map's Pearson r with the real T2 (in the mask), mean per site:",
      ", ".join(f"{n} {linear_r[sites == n].mean():+.2f}" for n in cv_patients.site_order(sites)))
