"""Masks, normalization (exact inverse) and the preprocessed-volume cache."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mrsynth.config import DataConfig
from mrsynth.data import preprocess as preprocess_module
from mrsynth.data.discovery import discover_pairs
from mrsynth.data.normalization import NormStats, fit_normalization
from mrsynth.data.preprocess import load_volume, otsu_foreground
from mrsynth.errors import DataError

from data_fixtures import synthetic_head


@pytest.mark.parametrize("method", ["zscore", "percentile", "wm_peak"])
def test_normalization_round_trip(method):
    head = synthetic_head()
    cfg = DataConfig(normalization=method, percentiles=(2.0, 98.0))
    stats = fit_normalization(head["t1"], head["mask"], cfg, "t1")
    normalized = stats.normalize(head["t1"])
    assert np.allclose(stats.denormalize(normalized), head["t1"], rtol=1e-6, atol=1e-4)
    inside = normalized[head["mask"] > 0]
    if method == "zscore":
        assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
    elif method == "percentile":
        assert np.isclose(np.percentile(inside, 2.0), 0, atol=1e-5) and np.isclose(np.percentile(inside, 98.0), 1, atol=1e-5)
    else:  # white matter (100) is the brightest mode: it maps to 1
        assert abs(stats.scale - 100.0) < 3.0
    assert NormStats.from_json(stats.to_json()) == stats


def test_zero_variance_inside_mask_is_rejected():
    x = np.zeros((8, 8, 8), np.float32)
    x[0] = 5.0
    mask = np.zeros_like(x, dtype=np.uint8)
    mask[2:6, 2:6, 2:6] = 1
    with pytest.raises(DataError, match="t1.nii: constant intensities inside the mask"):
        fit_normalization(x, mask, DataConfig(), "t1.nii")


def test_otsu_mask_finds_the_head():
    head = synthetic_head()
    mask = otsu_foreground(head["t1"])
    truth = head["mask"] > 0
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.95


def test_given_mask_is_used_and_background_is_zero(ixi_head_dir):
    pairs = discover_pairs(DataConfig(source="ixi", root=str(ixi_head_dir(1))))
    volume = preprocess_module.preprocess(pairs[0], DataConfig(mask="given"))
    truth = synthetic_head(seed=0)["mask"]
    assert np.array_equal(volume.mask, truth) and volume.mask.dtype == np.uint8
    assert not volume.t1[truth == 0].any() and not volume.t2[truth == 0].any()
    assert volume.t1.dtype == np.float32 and volume.t2.shape == volume.t1.shape


@pytest.fixture
def counted_preprocess(monkeypatch):
    calls = []
    real = preprocess_module.preprocess

    def counting(files, cfg):
        calls.append(files.subject)
        return real(files, cfg)

    monkeypatch.setattr(preprocess_module, "preprocess", counting)
    return calls


def test_cache_hit_and_invalidation(tmp_path, ixi_head_dir, write_nifti_file, counted_preprocess):
    root = ixi_head_dir(1)
    cfg = DataConfig(source="ixi", root=str(root), cache_dir=str(tmp_path / "cache"))
    files = discover_pairs(cfg)[0]
    first = load_volume(files, cfg)
    again = load_volume(files, cfg)
    assert counted_preprocess == [files.subject]
    assert isinstance(again.t1, np.memmap) and np.array_equal(first.t1, again.t1)
    assert again.t1_stats == first.t1_stats and np.array_equal(again.geometry.affine, first.geometry.affine)

    load_volume(files, DataConfig(source="ixi", root=str(root), cache_dir=cfg.cache_dir, normalization="percentile"))
    assert len(counted_preprocess) == 2  # a changed setting is a new entry

    changed = synthetic_head(seed=5)["t2"]
    write_nifti_file(files.t2, changed)
    refreshed = load_volume(files, cfg)
    assert len(counted_preprocess) == 3
    assert not np.array_equal(refreshed.t2, first.t2)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_failed_preprocessing_leaves_no_cache_entry(tmp_path, ixi_head_dir, write_nifti_file):
    root = ixi_head_dir(1)
    cfg = DataConfig(source="ixi", root=str(root), cache_dir=str(tmp_path / "cache"))
    files = discover_pairs(cfg)[0]
    bad = synthetic_head()["t2"]
    bad[3, 3, 3] = np.nan
    write_nifti_file(files.t2, bad)
    with pytest.raises(DataError, match="NaN or Inf"):
        load_volume(files, cfg)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_failure_while_writing_the_entry_leaves_nothing(tmp_path, ixi_head_dir, monkeypatch):
    cfg = DataConfig(source="ixi", root=str(ixi_head_dir(1)), cache_dir=str(tmp_path / "cache"))
    files = discover_pairs(cfg)[0]
    real_save = np.save

    def failing_save(path, array, *args, **kwargs):
        if str(path).endswith("t2.npy"):
            raise OSError("disk full")
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        load_volume(files, cfg)
    assert not any((tmp_path / "cache").iterdir())


def test_t1_only_volume(tmp_path, ixi_head_dir):
    root = ixi_head_dir(1, with_mask=False)
    t1_path = next(root.glob("*-T1.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = preprocess_module.load_t1_only(t1_path, DataConfig(cache_dir=str(tmp_path / "cache")))
    assert volume.t2 is None and volume.t2_stats is None
    assert volume.subject == t1_path.name.removesuffix(".nii.gz")
    assert volume.mask.any() and volume.t1.shape == volume.mask.shape


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_cache_stores_slices_contiguously_and_hands_back_the_input_grid(tmp_path, ixi_head_dir, slice_axis):
    """Entries are stored slice-axis-first (a training slice is one contiguous read), read back as
    views on the input grid equal to the uncached volume, and keyed by the slice axis."""
    root = ixi_head_dir(1)
    cfg = DataConfig(source="ixi", root=str(root), cache_dir=str(tmp_path / "cache"), slice_axis=slice_axis)
    files = discover_pairs(cfg)[0]
    plain = preprocess_module.preprocess(files, cfg)
    cached = load_volume(files, cfg)
    for name in ("t1", "t2", "mask"):
        got, want = getattr(cached, name), getattr(plain, name)
        assert got.shape == want.shape and np.array_equal(got, want), name
        assert np.take(got, 3, axis=slice_axis).flags["C_CONTIGUOUS"], name
        assert np.load(got.filename, mmap_mode="r").shape[0] == want.shape[slice_axis]
    other_axis = DataConfig(source="ixi", root=str(root), cache_dir=cfg.cache_dir, slice_axis=(slice_axis + 1) % 3)
    load_volume(files, other_axis)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # another layout is another entry
