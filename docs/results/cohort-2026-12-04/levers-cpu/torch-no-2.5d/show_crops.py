"""An axial and a coronal crop (120 voxels wide) through the brain's centre of each volume, one
column per volume, each windowed to its own 1st-99th percentile in the T1's mask: the coronal
crop shows whether consecutive axial slices of a 2D model agree (streaks where they do not).
python show_crops.py OUT.png T1 [NAME=SYNTH ...] T2"""
import pathlib
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import volume_views  # noqa: E402

HALF = 60  # half the crop's width, voxels
out, views, (x, y, z) = volume_views.read(sys.argv[1:])
fig, axes = plt.subplots(2, len(views), figsize=(4 * len(views), 7))
for (name, volume, low, high), (axial, coronal) in zip(views, axes.T):
    axial.imshow(np.rot90(volume[x - HALF:x + HALF, y - HALF:y + HALF, z]), cmap="gray", vmin=low, vmax=high)
    coronal.imshow(np.rot90(volume[x - HALF:x + HALF, y, z - HALF // 2:z + HALF // 2]), cmap="gray", vmin=low,
                   vmax=high)
    axial.set_title(name, loc="left", fontsize=10)
    axial.axis("off")
    coronal.axis("off")
fig.tight_layout()
fig.savefig(out, dpi=60)
