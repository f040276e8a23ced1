"""The user's whole journey, tiny: raw IXI-named pairs with displaced T2s -> prepare-ixi (its
default Otsu head masks) -> train (the recommended configs/ixi_2d.yaml, shrunk) -> predict, with
no flag, a new raw T1 of a held-out subject written at 1 mm in LAS (the training grid: 2 mm, PSR
on disk) -> scored against its real T2 within 0.5 dB of evaluate on the same subject at the
training grid. Both backends, from one prepared set.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations
from scipy import ndimage

from mrsynth.cli import main
from mrsynth.config import load_config
from mrsynth.data.contract import read_contract
from mrsynth.data.io import read_nifti, write_like
from mrsynth.data.preprocess import resample_to
from mrsynth.evaluation.score_files import score_prediction

PSNR_GAP_DB = 0.5  # the bound between predict on the new grid and evaluate on the training grid
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIFT_VOXELS = 2  # each raw T2 is displaced by 4 mm; prepare-ixi registers it back


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """prepare-ixi's manifest of five phantom subjects whose raw T2s are displaced."""
    home = tmp_path_factory.mktemp("journey")
    assert main(["demo-data", "--out", str(home / "raw"), "--subjects", "5", "--shape", "64", "76", "40"]) == 0
    for t2 in sorted((home / "raw").glob("*-T2.nii.gz")):
        image = nib.load(str(t2))
        moved = np.roll(np.asarray(image.dataobj), SHIFT_VOXELS, axis=0)
        nib.save(nib.Nifti1Image(moved, image.affine, image.header), str(t2))
    assert main(["prepare-ixi", "--t1-dir", str(home / "raw"), "--t2-dir", str(home / "raw"),
                 "--out", str(home / "prep"), "--grid", "t1", "--split", "0.6,0.2,0.2"]) == 0
    return home


def new_raw_t1(t1_path: Path, out: Path) -> Path:
    """The subject's raw T1 as another scanner would write it: 1 mm voxels (the same field of
    view, linear interpolation) stored LAS."""
    volume, geometry = read_nifti(t1_path)
    factors = np.full(3, 0.5)  # old voxels per new voxel
    shape = tuple(2 * n for n in volume.shape)
    fine = ndimage.affine_transform(volume, factors, offset=0.5 * factors - 0.5, output_shape=shape, order=1,
                                    mode="nearest")
    scale = np.diag([*factors, 1.0])
    scale[:3, 3] = 0.5 * factors - 0.5
    image = nib.Nifti1Image(fine.astype(np.float32), geometry.ras_affine @ scale)
    las = image.as_reoriented(orientations.ornt_transform(orientations.axcodes2ornt("RAS"),
                                                          orientations.axcodes2ornt("LAS")))
    nib.save(las, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_raw_t1_at_another_voxel_size_needs_no_flag(prepared, backend, tmp_path, capsys):
    home = prepared
    run = tmp_path / "run"
    sets = ["data.manifest=" + str(home / "prep" / "manifest.csv"), "data.workers=0",
            "data.cache_dir=" + str(tmp_path / "cache"), "data.patch_size=[48,56]",
            "model.depth=2", "model.base_channels=8", "model.channel_mults=[1,2,4]", "model.groups=2",
            "train.steps=60", "train.batch_size=8", "train.warmup_steps=4", "train.lr=3e-3",
            "train.precision=float32", "train.log_every=20", "train.val_every=60", "train.ckpt_every=60"]
    assert main(["train", "--backend", backend, "--config", str(CONFIGS / "ixi_2d.yaml"), "--run-dir", str(run),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    contract = read_contract(run)
    assert (contract.mask, contract.mask_extent, contract.voxel_size) == ("otsu", "head", (2.0, 2.0, 2.0))

    assert main(["evaluate", "--checkpoint", str(run), "--out", str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "per_subject.csv") as handle:
        evaluated = {r["subject"]: float(r["psnr"]) for r in csv.DictReader(handle) if r["method"] == backend}
    with open(home / "prep" / "manifest.csv") as handle:
        test_row = next(r for r in csv.DictReader(handle) if r["split"] == "test")
    subject_dir = home / "prep"
    raw_t1 = next((home / "raw").glob(f"{test_row['subject']}-*-T1.nii.gz"))
    new_t1 = new_raw_t1(raw_t1, tmp_path / raw_t1.name)

    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--input", str(new_t1), "--out", str(tmp_path / "pred")]) == 0
    out = capsys.readouterr().out
    assert "mask: Otsu head mask" in out and "resampled 1x1x1 mm -> 2x2x2 mm" in out, out
    written = tmp_path / "pred" / new_t1.name.replace(".nii.gz", "_synthT2.nii.gz")
    output, source = nib.load(str(written)), nib.load(str(new_t1))
    assert output.shape == source.shape and np.array_equal(output.affine, source.affine)
    assert "".join(orientations.aff2axcodes(output.affine)) == "LAS"
    sidecar = json.loads(written.with_name(written.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["Grid"]["resampled"] and sidecar["Grid"]["model_voxel_size_mm"] == [2.0, 2.0, 2.0]
    assert sidecar["Mask"]["source"] == "otsu"

    # Scored as evaluate scores: on the training grid, in the subject's prepared mask.
    pred, pred_geometry = read_nifti(written)
    _, grid = read_nifti(subject_dir / test_row["t1"])
    on_grid = tmp_path / "on_training_grid.nii.gz"
    write_like(resample_to(pred, pred_geometry, grid, order=1), grid, on_grid)
    cfg = load_config(run / "config.yaml")
    score = score_prediction(on_grid, subject_dir / test_row["t2"], subject_dir / test_row["mask"],
                             contract.t2_reference, cfg.data)
    gap = score["psnr"] - evaluated[test_row["subject"]]
    assert abs(gap) <= PSNR_GAP_DB, (score["psnr"], evaluated)
