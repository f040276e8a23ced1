"""The T1-only path on real patients from two scanners (../shared/data/patients_sri24).

Train a tiny model on one skull-stripped patient pair, synthesize the other patient's T2 from its
T1 with `predict`, and score the file against its real T2: the same figure as `evaluate`, the
output inside the training T2's range, and no bright rim at the brain's edge. The volumes are
cut to the brains' box with a band of background around it, and to a slab of 48 axial slices
through the middle of the brains: a third of the voxels, every in-plane brain edge kept. Skipped
when the folder is absent (a user's fresh clone); CI has it beside the clone.
"""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mrsynth.cli import main
from mrsynth.config import load_config
from mrsynth.data.contract import read_contract
from mrsynth.data.io import read_nifti, save_nifti
from mrsynth.data.preprocess import nonzero_foreground
from mrsynth.evaluation.score_files import score_prediction

PATIENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "patients_sri24"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not (PATIENTS / "AURORA" / "t1.nii.gz").is_file(), reason=f"{PATIENTS} not present"),
]
PSNR_GAP_DB = 0.5
SUBJECTS = ("AURORA", "TCGA-DU-7294")
AXIAL_SLAB = slice(50, 98)  # of the SRI24 grid's 155 axial slices; both brains span slices 4-142


def edge_and_interior(mask: np.ndarray, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The brain's edge band and what it encloses; the slab's cut faces (brain that continues
    beyond the array) are interior, not edge."""
    interior = ndimage.binary_erosion(mask, iterations=width, border_value=1)
    return mask & ~interior, interior


def cropped_patients(folder: Path, margin: int = 10) -> Path:
    """Both patients' volumes cut to the box around either T1's brain plus ``margin`` voxels of
    background, and to ``AXIAL_SLAB`` (the header's affine moves with the box): the same real data
    and in-plane brain edges, a third of the voxels to synthesize and score."""
    images = {(s, r): nib.load(str(PATIENTS / s / f"{r}.nii.gz")) for s in SUBJECTS for r in ("t1", "t2")}
    brain = np.argwhere(sum(np.asarray(images[s, "t1"].dataobj) > 0 for s in SUBJECTS))
    box = tuple(slice(max(lo - margin, 0), hi + margin + 1) for lo, hi in zip(brain.min(0)[:2], brain.max(0)[:2]))
    box += (AXIAL_SLAB,)
    for (subject, role), image in images.items():
        (folder / subject).mkdir(parents=True, exist_ok=True)
        nib.save(image.slicer[box], str(folder / subject / f"{role}.nii.gz"))
    return folder


def test_predict_on_another_patient_matches_evaluate_without_a_rim(tmp_path):
    patients = cropped_patients(tmp_path / "patients")
    overrides = [
        "data.source=glob", f"data.root={patients}", "data.t1_glob=*/t1.nii.gz", "data.t2_glob=*/t2.nii.gz",
        "data.train_subjects=[AURORA]", "data.val_subjects=[]", "data.test_subjects=[TCGA-DU-7294]",
        "data.mask=nonzero", f"data.cache_dir={tmp_path / 'cache'}", "data.patch_size=[128,128]",
        "model.depth=2", "model.base_channels=8", "model.channel_mults=[1,2,4]",
        "train.steps=30", "train.batch_size=8", "train.warmup_steps=3", "train.lr=3e-3",
        "train.log_every=10", "train.val_every=30", "train.ckpt_every=30",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "--backend", "jax", "--run-dir", str(run), *sets]) == 0
    assert read_contract(run).mask == "nonzero"
    assert main(["evaluate", "--checkpoint", str(run), "--out", str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "per_subject.csv") as handle:
        evaluated = next(float(r["psnr"]) for r in csv.DictReader(handle) if r["method"] == "jax")

    t1_path, t2_path = patients / "TCGA-DU-7294" / "t1.nii.gz", patients / "TCGA-DU-7294" / "t2.nii.gz"
    # The contract's own policy (non-zero voxels), and the same asked for explicitly.
    assert main(["predict", "--checkpoint", str(run), "--input", str(t1_path), "--out", str(tmp_path / "a")]) == 0
    assert main(["predict", "--checkpoint", str(run), "--input", str(t1_path), "--out", str(tmp_path / "b"),
                 "--mask", "nonzero"]) == 0
    a, _ = read_nifti(tmp_path / "a" / "t1_synthT2.nii.gz")
    b, _ = read_nifti(tmp_path / "b" / "t1_synthT2.nii.gz")
    np.testing.assert_array_equal(a, b)

    t1, geometry = read_nifti(t1_path)
    brain = nonzero_foreground(t1)
    save_nifti(brain.astype(np.uint8), geometry.ras_affine, tmp_path / "brain.nii.gz")
    cfg = load_config(run / "config.yaml")
    score = score_prediction(tmp_path / "a" / "t1_synthT2.nii.gz", t2_path, tmp_path / "brain.nii.gz",
                             read_contract(run).t2_reference, cfg.data)
    assert abs(score["psnr"] - evaluated) <= PSNR_GAP_DB, (score["psnr"], evaluated)
    train_t2_max = float(read_nifti(patients / "AURORA" / "t2.nii.gz")[0].max())
    assert score["max_output"] <= 1.5 * train_t2_max and score["min_output"] >= 0.0

    # No bright rim: at the brain's edge the synthesized T2 is not brighter, relative to its
    # interior, than the real T2 is (intensities z-scored in the brain to compare contrasts).
    real, _ = read_nifti(t2_path)
    edge, interior = edge_and_interior(brain)

    def edge_contrast(x: np.ndarray) -> float:
        z = (x - x[brain].mean()) / x[brain].std()
        return float(z[edge].mean() - z[interior].mean())

    assert edge_contrast(a) <= edge_contrast(real) + 0.25
