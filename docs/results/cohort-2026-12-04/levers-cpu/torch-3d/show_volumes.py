"""Three orthogonal slices through the brain's centre of each volume, one row per volume (T1, the
synthesized T2s, the real T2), each row windowed to its own 1st-99th percentile in the T1's mask.
python show_volumes.py OUT.png T1 [NAME=SYNTH ...] T2"""
import sys

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, t1, *synths, t2 = sys.argv[1:]
rows = [("T1", t1)] + [tuple(s.split("=", 1)) for s in synths] + [("real T2", t2)]
mask = np.asarray(nib.load(t1).dataobj) > 0
centre = [int(np.mean(np.nonzero(mask)[i])) for i in range(3)]
fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)))
for row, (name, path) in zip(axes, rows):
    volume = np.asarray(nib.load(path).dataobj, dtype=np.float32) * mask
    low, high = np.percentile(volume[mask], [1, 99])
    for ax, plane in zip(row, (volume[:, :, centre[2]], volume[:, centre[1], :], volume[centre[0], :, :])):
        ax.imshow(np.rot90(plane), cmap="gray", vmin=low, vmax=high)
        ax.axis("off")
    row[0].set_title(name, loc="left", fontsize=9)
fig.tight_layout()
fig.savefig(out, dpi=60)
