"""The built-in phantom: determinism, MR plausibility, files and orientation, ensure_phantom, demo-data."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import mrsynth.phantom.dataset as phantom
from mrsynth.cli import main
from mrsynth.config import DataConfig
from mrsynth.phantom.dataset import TISSUES, ensure_phantom, generate_subject, write_phantom_dataset
from mrsynth.phantom.anatomy import BACKGROUND, CSF, GRAY_MATTER, SCALP_FAT, WHITE_MATTER
from mrsynth.phantom.mri import sample_relaxation, t1w_signal, t2w_signal
from mrsynth.errors import ConfigError, DataError

SHAPE = (48, 56, 40)
TINY = (24, 28, 20)


@pytest.fixture(scope="module")
def subject():
    return generate_subject(3, SHAPE)


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("*.nii.gz"))


def test_same_seed_same_subject_and_another_seed_another_head(subject):
    again = generate_subject(3, SHAPE)
    for name in ("t1", "t2", "labels", "mask", "affine"):
        np.testing.assert_array_equal(getattr(again, name), getattr(subject, name))
    other = generate_subject(4, SHAPE)
    assert np.mean(other.labels != subject.labels) > 0.05
    assert not np.allclose(other.t1, subject.t1)


def test_arrays_are_ras_with_the_requested_shape_and_types(subject):
    assert subject.t1.shape == subject.t2.shape == subject.labels.shape == subject.mask.shape == SHAPE
    assert (subject.t1.dtype, subject.t2.dtype) == (np.float32, np.float32)
    assert (subject.labels.dtype, subject.mask.dtype) == (np.int16, np.uint8)
    assert nib.aff2axcodes(subject.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(subject.affine)[:3], 2.0)


@pytest.mark.parametrize("seed", range(40))
def test_tissue_signals_have_t1w_and_t2w_ordering_for_any_subject(seed):
    tissue = sample_relaxation(np.random.default_rng(seed))
    t1w, t2w = np.abs(t1w_signal(tissue)), t2w_signal(tissue)
    assert t1w[WHITE_MATTER] > 1.3 * t1w[GRAY_MATTER] > 1.3 * t1w[CSF]
    assert t2w[CSF] > 1.3 * t2w[GRAY_MATTER] > 1.3 * t2w[WHITE_MATTER]
    assert t1w[SCALP_FAT] > t1w[WHITE_MATTER]  # bright scalp fat on T1w


@pytest.mark.parametrize("seed", [3, 11])
def test_image_contrast_inside_the_mask(seed, subject):
    s = subject if seed == 3 else generate_subject(seed, SHAPE)
    inside = s.mask.astype(bool)
    t1 = {c: s.t1[inside & (s.labels == c)].mean() for c in (CSF, GRAY_MATTER, WHITE_MATTER)}
    t2 = {c: s.t2[inside & (s.labels == c)].mean() for c in (CSF, GRAY_MATTER, WHITE_MATTER)}
    assert t1[WHITE_MATTER] > t1[GRAY_MATTER] > t1[CSF]
    assert t2[CSF] > t2[GRAY_MATTER] > t2[WHITE_MATTER]


def test_labels_contain_every_tissue_with_plausible_brain_volumes(subject):
    assert set(np.unique(subject.labels).tolist()) == set(TISSUES)
    brain = {c: int((subject.labels == c).sum()) for c in (CSF, GRAY_MATTER, WHITE_MATTER)}
    total = sum(brain.values())
    assert 0.2 < brain[GRAY_MATTER] / total < 0.6 and 0.25 < brain[WHITE_MATTER] / total < 0.7


def test_mask_is_one_brain_inside_the_skull(subject):
    mask = subject.mask.astype(bool)
    grey_white = np.isin(subject.labels, (GRAY_MATTER, WHITE_MATTER))
    assert mask[grey_white].all()
    assert not (mask & np.isin(subject.labels, (BACKGROUND, SCALP_FAT))).any()
    assert ndimage.label(mask)[1] == 1
    assert 0.05 < mask.mean() < 0.6


def test_background_is_a_small_positive_rician_floor(subject):
    head = ndimage.binary_dilation(subject.labels != BACKGROUND, iterations=3)
    for image in (subject.t1, subject.t2):
        air = image[~head]
        wm = image[subject.labels == WHITE_MATTER].mean()
        assert air.min() >= 0 and air.mean() > 0
        assert air.mean() < 0.1 * wm
        # A Rayleigh distribution (magnitude of pure complex noise) has std/mean = 0.523.
        assert 0.45 < air.std() / air.mean() < 0.6


def test_files_have_ixi_names_non_ras_storage_and_reorient_to_the_requested_shape(tmp_path):
    paths = write_phantom_dataset(tmp_path, 2, TINY, seed=5)
    names = [p.name for p in paths]
    assert names[:4] == [f"IXI901-Phantom-0501-{role}.nii.gz" for role in ("T1", "T2", "mask", "labels")]
    assert names[4].startswith("IXI902-Phantom-0502-")
    assert _files(tmp_path) == sorted(paths) and (tmp_path / "phantom.json").is_file()
    expected = generate_subject(501, TINY)
    for path, array in zip(paths[:4], (expected.t1, expected.t2, expected.mask, expected.labels)):
        image = nib.load(path)
        assert nib.aff2axcodes(image.affine) != ("R", "A", "S")
        canonical = nib.as_closest_canonical(image)
        assert canonical.shape == TINY
        np.testing.assert_array_equal(np.asarray(canonical.dataobj), array)
        np.testing.assert_allclose(canonical.affine, expected.affine)
        assert image.get_data_dtype() == array.dtype


def test_ensure_phantom_generates_once_and_refuses_other_settings(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "ph"), phantom_subjects=2, phantom_shape=TINY, phantom_seed=0)
    assert ensure_phantom(cfg) == Path(cfg.root)
    first = {p.name: p.stat().st_mtime_ns for p in _files(Path(cfg.root))}
    assert len(first) == 8
    ensure_phantom(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in _files(Path(cfg.root))} == first

    cfg.phantom_seed = 1  # another run may be reading this root: never regenerate it under them
    with pytest.raises(ConfigError, match="holds a phantom with subjects=2.*seed=0.*asks for.*seed=1"):
        ensure_phantom(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in _files(Path(cfg.root))} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ph.lock", "ph"]  # no temp dirs left


def test_interrupted_generation_leaves_the_previous_state(tmp_path, monkeypatch):
    cfg = DataConfig(root=str(tmp_path / "ph"), phantom_subjects=2, phantom_shape=TINY)
    calls = []

    def failing(seed, shape, voxel_mm=2.0):
        calls.append(seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return generate_subject(seed, shape, voxel_mm)

    monkeypatch.setattr(phantom, "generate_subject", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_phantom(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ph.lock"]


def test_ensure_phantom_refuses_to_replace_a_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a phantom dataset"):
        ensure_phantom(DataConfig(root=str(root), phantom_subjects=1, phantom_shape=TINY))
    assert (root / "notes.txt").read_text() == "keep me"


def test_demo_data_command_writes_n_subjects(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-data", "--out", str(out), "--subjects", "3", "--shape", *map(str, TINY), "--seed", "2"]) == 0
    files = _files(out)
    assert len(files) == 12 and {f.name.split("-")[0] for f in files} == {"IXI901", "IXI902", "IXI903"}
    assert "wrote 3 phantom subjects" in capsys.readouterr().out
    assert main(["demo-data", "--out", str(out), "--subjects", "0"]) == 1
    assert "error: --subjects" in capsys.readouterr().err
