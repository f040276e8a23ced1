"""NIfTI io: RAS+ reorientation, exact write-back, resampling onto the T1 grid, bad files."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from mrsynth.config import DataConfig
from mrsynth.data.discovery import SubjectFiles
from mrsynth.data.io import read_nifti, write_like
from mrsynth.data.preprocess import preprocess, resample_to
from mrsynth.errors import DataError

from data_fixtures import synthetic_head

# PSR storage like the course data: i -> posterior, j -> superior, k -> right.
PSR = np.array([[0, 0, 2.0, -30], [-2.0, 0, 0, 40], [0, 2.0, 0, -20], [0, 0, 0, 1]])
LPS = np.array([[-2.0, 0, 0, 30], [0, -2.0, 0, 40], [0, 0, 2.0, -20], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine, codes", [(PSR, "PSR"), (LPS, "LPS")])
def test_stored_orientation_reads_as_ras_and_writes_back_exactly(tmp_path, write_nifti_file, affine, codes):
    stored = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    path = write_nifti_file(tmp_path / "in.nii.gz", stored, affine)
    ras, geometry = read_nifti(path)
    assert geometry.axcodes == codes
    assert nib.aff2axcodes(geometry.ras_affine) == ("R", "A", "S")
    # The same world point has the same value in both arrays.
    ijk = np.array([1, 2, 3])
    world = affine[:3, :3] @ ijk + affine[:3, 3]
    ras_ijk = np.rint(np.linalg.solve(geometry.ras_affine[:3, :3], world - geometry.ras_affine[:3, 3])).astype(int)
    assert ras[tuple(ras_ijk)] == stored[tuple(ijk)]

    out = tmp_path / "out.nii.gz"
    write_like(ras, geometry, out)
    back = nib.load(out)
    original = nib.load(path)
    assert np.array_equal(back.affine, original.affine)
    assert back.shape == original.shape and back.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(back.dataobj), stored)
    assert back.header["sform_code"] == original.header["sform_code"]
    assert back.header.get_slope_inter() == (None, None)


def test_scaled_integer_input_writes_float_without_scaling(tmp_path):
    image = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), PSR)
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    ras, geometry = read_nifti(tmp_path / "scaled.nii.gz")
    write_like(ras, geometry, tmp_path / "out.nii.gz")
    back = nib.load(tmp_path / "out.nii.gz")
    assert np.allclose(back.get_fdata(), np.arange(60).reshape(3, 4, 5) * 0.5 + 10.0)
    assert back.header.get_slope_inter() == (None, None)


def test_write_like_rejects_wrong_shape(tmp_path, write_nifti_file):
    _, geometry = read_nifti(write_nifti_file(tmp_path / "in.nii.gz", np.ones((4, 5, 6), np.float32), PSR))
    with pytest.raises(DataError, match="does not match the grid"):
        write_like(np.zeros((4, 5, 6)), geometry, tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()


def test_t2_with_known_shift_lands_on_the_t1_grid(tmp_path, write_nifti_file):
    t1 = np.zeros((20, 20, 20), np.float32)
    t1[8:12, 6:14, 5:15] = 1.0
    t1_path = write_nifti_file(tmp_path / "t1.nii.gz", t1, np.diag([2.0, 2.0, 2.0, 1.0]))
    # T2 stored LPS with a 4 mm (2 voxel) shifted origin and 1 mm voxels: the same object.
    t2_affine = np.array([[-1.0, 0, 0, 39.0], [0, -1.0, 0, 39.0 - 4.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    world_of_t2 = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), -1) @ t2_affine[:3, :3].T + t2_affine[:3, 3]
    t1_index = np.floor(world_of_t2 / 2.0 + 0.25).astype(int)
    inside = np.all((t1_index >= 0) & (t1_index < 20), axis=-1)
    t2 = np.zeros((40, 40, 40), np.float32)
    t2[inside] = t1[tuple(t1_index[inside].T)]
    t2_path = write_nifti_file(tmp_path / "t2.nii.gz", t2, t2_affine)
    t1_ras, t1_geometry = read_nifti(t1_path)
    t2_ras, t2_geometry = read_nifti(t2_path)
    on_t1 = resample_to(t2_ras, t2_geometry, t1_geometry, order=0)
    assert on_t1.shape == t1.shape
    assert np.array_equal(on_t1[2:-2, 2:-2, 2:-2], t1[2:-2, 2:-2, 2:-2])


def _subject(tmp_path, write, t1, t2, t2_affine=None) -> SubjectFiles:
    return SubjectFiles("S", write(tmp_path / "S-T1.nii.gz", t1), write(tmp_path / "S-T2.nii.gz", t2, t2_affine))


def test_grids_that_cannot_be_aligned(tmp_path, write_nifti_file):
    head = synthetic_head()
    far = np.diag([2.0, 2.0, 2.0, 1.0])
    far[:3, 3] = 1000.0
    files = _subject(tmp_path, write_nifti_file, head["t1"], head["t2"], far)
    with pytest.raises(DataError, match=r"S-T2\.nii\.gz: field of view does not overlap"):
        preprocess(files, DataConfig(mask="otsu"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda h: h["t1"][..., None].repeat(2, axis=-1), r"expected a 3D volume, got shape \(24, 28, 20, 2\)"),
        (lambda h: h["t1"][:, :, 0], r"expected a 3D volume, got shape \(24, 28\)"),
        (lambda h: np.where(h["mask"] > 0, np.nan, h["t1"]), r"\d+ voxels are NaN or Inf"),
        (lambda h: np.where(h["mask"] > 0, np.inf, h["t1"]), r"\d+ voxels are NaN or Inf"),
        (lambda h: np.full_like(h["t1"], 7.0), "constant volume"),
    ],
)
def test_bad_volume_content(tmp_path, write_nifti_file, make, message):
    head = synthetic_head()
    files = _subject(tmp_path, write_nifti_file, make(head), head["t2"])
    with pytest.raises(DataError, match=rf"S-T1\.nii\.gz: {message}"):
        preprocess(files, DataConfig(mask="otsu"))


def test_unreadable_files(tmp_path, write_nifti_file):
    head = synthetic_head()
    good = write_nifti_file(tmp_path / "good.nii.gz", head["t1"])
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"truncated\.nii\.gz: (unreadable or truncated|not a readable)"):
        read_nifti(truncated)
    not_nifti = tmp_path / "notes.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"these are not the voxels you are looking for" * 20))
    with pytest.raises(DataError, match=r"notes\.nii\.gz: not a readable NIfTI file"):
        read_nifti(not_nifti)
    text = tmp_path / "plain.nii"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"plain\.nii: not a readable NIfTI file"):
        read_nifti(text)
    with pytest.raises(DataError, match=r"missing\.nii\.gz: volume file not found"):
        read_nifti(tmp_path / "missing.nii.gz")
