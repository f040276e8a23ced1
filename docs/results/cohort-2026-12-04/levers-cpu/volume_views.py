"""The volumes of a look-figure, read once for torch-3d/show_volumes.py and
torch-no-2.5d/show_crops.py from their command line (OUT.png T1 [NAME=SYNTH ...] T2): each volume
zeroed outside the T1's non-zero mask and windowed to its own 1st-99th percentile inside it, and
the mask's centre voxel."""
import nibabel as nib
import numpy as np


def read(argv: list[str]) -> tuple[str, list[tuple[str, np.ndarray, float, float]], tuple[int, ...]]:
    """(figure path, [(name, masked volume, window low, window high)], centre of the T1's mask)."""
    out, t1, *synths, t2 = argv
    named = [("T1", t1)] + [tuple(s.split("=", 1)) for s in synths] + [("real T2", t2)]
    mask = np.asarray(nib.load(t1).dataobj) > 0
    centre = tuple(int(np.mean(np.nonzero(mask)[i])) for i in range(3))
    views = []
    for name, path in named:
        volume = np.asarray(nib.load(path).dataobj, dtype=np.float32) * mask
        low, high = np.percentile(volume[mask], [1, 99])
        views.append((name, volume, low, high))
    return out, views, centre
