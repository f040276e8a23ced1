"""Three orthogonal slices through the brain's centre of each volume, one row per volume (T1, the
synthesized T2s, the real T2), each row windowed to its own 1st-99th percentile in the T1's mask.
python show_volumes.py OUT.png T1 [NAME=SYNTH ...] T2"""
import pathlib
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import volume_views  # noqa: E402

out, views, (x, y, z) = volume_views.read(sys.argv[1:])
fig, axes = plt.subplots(len(views), 3, figsize=(9, 3 * len(views)))
for row, (name, volume, low, high) in zip(axes, views):
    for ax, plane in zip(row, (volume[:, :, z], volume[:, y, :], volume[x, :, :])):
        ax.imshow(np.rot90(plane), cmap="gray", vmin=low, vmax=high)
        ax.axis("off")
    row[0].set_title(name, loc="left", fontsize=9)
fig.tight_layout()
fig.savefig(out, dpi=60)
