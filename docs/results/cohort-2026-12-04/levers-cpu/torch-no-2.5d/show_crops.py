"""An axial and a coronal crop (120 voxels wide) through the brain's centre of each volume, one
column per volume, each windowed to its own 1st-99th percentile in the T1's mask: the coronal
crop shows whether consecutive axial slices of a 2D model agree (streaks where they do not).
python show_crops.py OUT.png T1 [NAME=SYNTH ...] T2"""
import sys

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HALF = 60  # half the crop's width, voxels
out, t1, *synths, t2 = sys.argv[1:]
columns = [("T1", t1)] + [tuple(s.split("=", 1)) for s in synths] + [("real T2", t2)]
mask = np.asarray(nib.load(t1).dataobj) > 0
x, y, z = (int(np.mean(np.nonzero(mask)[i])) for i in range(3))
fig, axes = plt.subplots(2, len(columns), figsize=(4 * len(columns), 7))
for (name, path), (axial, coronal) in zip(columns, axes.T):
    volume = np.asarray(nib.load(path).dataobj, dtype=np.float32) * mask
    low, high = np.percentile(volume[mask], [1, 99])
    axial.imshow(np.rot90(volume[x - HALF:x + HALF, y - HALF:y + HALF, z]), cmap="gray", vmin=low, vmax=high)
    coronal.imshow(np.rot90(volume[x - HALF:x + HALF, y, z - HALF // 2:z + HALF // 2]), cmap="gray", vmin=low,
                   vmax=high)
    axial.set_title(name, loc="left", fontsize=10)
    axial.axis("off")
    coronal.axis("off")
fig.tight_layout()
fig.savefig(out, dpi=60)
