"""Are the sites whose ssim_z margin is small the ones acquired with thick slices? For each patient
of the 3000-step cross-validation (steps-3000/cv-seed-0): how sharp its T1 and real T2 are across
slices against within them (mean |difference| between neighbouring voxels along the slice axis over
the mean along the two in-plane axes, on the volume z-scored in the brain; about 1 for an isotropic
acquisition, well below 1 where thick slices were interpolated onto the 1 mm grid), per site, and
its Pearson correlation over the 43 patients with the U-Net's ssim_z and with its margin over the
better baseline.
Run from this folder: python slice_sharpness.py ../../../../../shared/data/brats18/manifest.csv"""
import csv
import pathlib
import sys

import nibabel as nib
import numpy as np
from scipy import stats

import cv_patients


def through_plane_ratio(volume: np.ndarray, mask: np.ndarray) -> float:
    """Mean |neighbour difference| along axis 2 over the mean along axes 0 and 1, inside the mask."""
    z = (volume - volume[mask].mean()) / volume[mask].std()
    steps = []
    for axis in range(3):
        both = np.logical_and(np.take(mask, range(1, mask.shape[axis]), axis), np.take(mask, range(mask.shape[axis] - 1), axis))
        steps.append(np.abs(np.diff(z, axis=axis))[both].mean())
    return steps[2] / np.mean(steps[:2])


def main() -> None:
    manifest = pathlib.Path(sys.argv[1])
    rows = {r["subject"]: r for r in csv.DictReader(open(manifest))}
    subjects, sites, methods = cv_patients.load(str(manifest))
    ratio = {"t1": [], "t2": []}
    for s in subjects:
        t1 = np.asarray(nib.load(manifest.parent / rows[s]["t1"]).dataobj, dtype=np.float32)
        t2 = np.asarray(nib.load(manifest.parent / rows[s]["t2"]).dataobj, dtype=np.float32)
        mask = (t1 > 0) & (t2 > 0)
        for name, volume in (("t1", t1), ("t2", t2)):
            ratio[name].append(through_plane_ratio(volume, mask))
    ratio = {k: np.array(v) for k, v in ratio.items()}
    unet, baseline = cv_patients.unet_and_baseline(methods, subjects, "ssim_z")
    margin = unet - baseline
    print("| site | n | T1 through-plane / in-plane | T2 through-plane / in-plane | U-Net ssim_z | ssim_z margin |")
    print("|---|---|---|---|---|---|")
    for name in cv_patients.site_order(sites):
        at = sites == name
        print(f"| {name} | {at.sum()} | {ratio['t1'][at].mean():.2f} ({ratio['t1'][at].min():.2f}-{ratio['t1'][at].max():.2f}) | "
              f"{ratio['t2'][at].mean():.2f} ({ratio['t2'][at].min():.2f}-{ratio['t2'][at].max():.2f}) | "
              f"{unet[at].mean():.3f} | {margin[at].mean():+.3f} |")
    for name in ("t1", "t2"):
        for label, values in (("U-Net ssim_z", unet), ("ssim_z margin", margin)):
            r, p = stats.pearsonr(ratio[name], values)
            print(f"over {len(subjects)} patients: corr({name.upper()} through-plane ratio, {label}) r = {r:+.2f} (p = {p:.1g})")


if __name__ == "__main__":
    main()
