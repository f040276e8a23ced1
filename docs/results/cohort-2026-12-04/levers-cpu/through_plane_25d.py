"""Does the 2.5D context make a 2D model's consecutive axial slices agree? For each held-out
patient of folds 0 and 1, seed 1 (1000 steps, PyTorch), the through-plane over in-plane
neighbour-difference ratio (slice_sharpness.through_plane_ratio) of the volume that `evaluate`
wrote for the recommended model and for the one without 2.5D input, beside the real T2's and the
T1's: a model that predicts each slice on its own, with nothing tying it to the next, leaves
through-plane steps (streaks in a coronal view) that raise the ratio.
Run from this folder: python through_plane_25d.py SWEEP_OUT ../../../../../shared/data/brats18/manifest.csv
(SWEEP_OUT: the lever sweep's --out, which keeps each point's evaluate/nifti volumes.)"""
import csv
import pathlib
import sys

import nibabel as nib
import numpy as np

from mrsynth.evaluation.stats import summarize
from slice_sharpness import through_plane_ratio

VARIANTS = {"2.5D (recommended)": "torch-recommended", "single slice": "torch-no-2.5d"}
SEED = 1


def volume(path: pathlib.Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def main() -> None:
    out, manifest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    rows = {r["subject"]: r for r in csv.DictReader(open(manifest))}
    print("| fold | patient | T1 | real T2 | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|---|" + "---|" * len(VARIANTS))
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for fold in (0, 1):
        nifti = {name: out / v / f"fold-{fold}-seed-{SEED}" / f"seed-{SEED}" / "n-34" / "eval" / "nifti"
                 for name, v in VARIANTS.items()}
        for path in sorted(nifti["single slice"].glob("*_torch_T2.nii.gz")):
            subject = path.name.removesuffix("_torch_T2.nii.gz")
            t1, t2 = (volume(manifest.parent / rows[subject][k]) for k in ("t1", "t2"))
            mask = (t1 > 0) & (t2 > 0)
            own = {name: through_plane_ratio(volume(folder / path.name), mask) for name, folder in nifti.items()}
            for name, value in own.items():
                ratios[name].append(value)
            print(f"| {fold} | {subject} | {through_plane_ratio(t1, mask):.2f} | {through_plane_ratio(t2, mask):.2f} | "
                  + " | ".join(f"{v:.2f}" for v in own.values()) + " |")
    single, context = np.array(ratios["single slice"]), np.array(ratios["2.5D (recommended)"])
    interval = summarize(list(single - context), interval="t")
    print(f"\nsingle slice minus 2.5D over {len(single)} patients: {interval['mean']:+.3f} "
          f"[95% t {interval['ci_low']:+.3f}, {interval['ci_high']:+.3f}], higher for {(single > context).sum()}")


if __name__ == "__main__":
    main()
