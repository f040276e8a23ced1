"""Split one registered T1/T2 pair into interleaved slabs written as separate "subjects".

With a single real pair (such as the MNI template in ``../shared/data``) there is no held-out
subject; slabs of axial slices, assigned round-robin to train/val/test, give a held-out part
with the same anatomy mix, and exercise the real-data path end to end (NIfTI io, manifest
discovery, its split column, training, whole-volume evaluation). Each slab keeps the source's
voxel-to-world mapping (its affine is shifted by the slab's start), so outputs land in place.
"""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from mrsynth.data.io import save_nifti
from mrsynth.errors import DataError
from mrsynth.fileio import atomic_path

SPLIT_CYCLE = ("train", "train", "train", "val", "test")


def write_slab_subjects(t1: Path, t2: Path, mask: Path | None, out_dir: Path, *, slab: int = 8,
                        axis: int = 2, cycle: tuple[str, ...] = SPLIT_CYCLE,
                        min_mask_fraction: float = 0.01) -> Path:
    """Write ``slab``-thick pieces of the pair along ``axis`` and a manifest with a split column.

    Returns the manifest path. Files are named ``slab<k>-T1.nii.gz`` etc.; split ``cycle[k % n]``
    over the kept slabs. Slabs with less than ``min_mask_fraction`` of mask (above the head) are
    left out: normalization needs foreground.
    """
    images = {"t1": nib.load(str(t1)), "t2": nib.load(str(t2))}
    if mask is not None:
        images["mask"] = nib.load(str(mask))
    shape = images["t1"].shape
    for role, image in images.items():
        if image.shape != shape or not np.allclose(image.affine, images["t1"].affine):
            raise DataError(f"{image.get_filename()}: {role} is not on the T1 grid; slabs need a registered pair")
    arrays = {role: np.asarray(image.dataobj, dtype=np.float32) for role, image in images.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, shape[axis] - slab + 1, slab):
        index = [slice(None)] * 3
        index[axis] = slice(start, start + slab)
        if "mask" in arrays and (arrays["mask"][tuple(index)] > 0.5).mean() < min_mask_fraction:
            continue
        k = len(rows)
        shift = np.eye(4)
        shift[axis, 3] = start
        affine = images["t1"].affine @ shift
        row = {"subject": f"slab{k:02d}", "split": cycle[k % len(cycle)]}
        for role, data in arrays.items():
            path = out_dir / f"slab{k:02d}-{role.upper()}.nii.gz"
            save_nifti(data[tuple(index)], affine, path)
            row[role] = path.name
        rows.append(row)
    manifest = out_dir / "manifest.csv"
    with atomic_path(manifest) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["subject", "t1", "t2", *(["mask"] if mask else []), "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
