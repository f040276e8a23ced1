"""Metrics against scikit-image and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrsynth.phantom.dataset import TISSUES
from mrsynth.evaluation.metrics import (MIN_SLICE_VOXELS, SSIM_RADIUS, TargetCache, literature_slice_metrics,
                                        masked_ssim_mean,
                                        scale_invariant_metrics, sharpness_ratio, slice_psnr_z, ssim_map, volume_metrics,
                                        volume_ssim, zscore_inside)


def _pair(shape=(24, 26, 22), seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=shape)
    target = ndimage.gaussian_filter(target, 2.0) * 10
    pred = target + 0.3 * rng.normal(size=shape)
    mask = np.zeros(shape, np.uint8)
    mask[4:-4, 5:-5, 3:-3] = 1
    return pred, target, mask


def _skimage_ssim(a, b, data_range, full=False):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, full=full)


MASK_BOXES = {"interior": np.s_[12:25, 10:20, 9:18], "touching_the_edge": np.s_[0:9, 20:36, 5:12],
              "one_voxel": np.s_[20:21, 18:19, 15:16]}


def _mask_in_a_box(shape, where):
    """A mask filling every other plane of one of MASK_BOXES (one voxel: that voxel), and the box."""
    mask = np.zeros(shape, bool)
    box = MASK_BOXES[where]
    mask[box] = True
    if where != "one_voxel":
        mask[box][::2] = False  # not a solid block
    return mask, box


def test_ssim_map_equals_skimage_3d_and_2d():
    pred, target, _ = _pair()
    _, ref_map = _skimage_ssim(pred, target, 5.0, full=True)
    np.testing.assert_allclose(ssim_map(pred, target, 5.0), ref_map, rtol=1e-10, atol=1e-12)
    _, ref_2d = _skimage_ssim(pred[:, :, 7], target[:, :, 7], 5.0, full=True)
    np.testing.assert_allclose(ssim_map(pred[:, :, 7], target[:, :, 7], 5.0), ref_2d, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("where", list(MASK_BOXES))
def test_the_masked_ssim_on_the_bounding_box_equals_the_whole_map(where):
    """The box is the mask's extent widened by the window radius: no value read is left out."""
    pred, target, _ = _pair(shape=(40, 36, 30))
    mask, box = _mask_in_a_box(pred.shape, where)
    whole = ssim_map(pred, target, 4.0)[mask].mean()
    assert masked_ssim_mean(pred, target, mask, 4.0) == pytest.approx(whole, rel=1e-13, abs=0)
    ring = mask.copy()
    ring[box] = False
    ring[tuple(slice(s.stop, s.stop + SSIM_RADIUS + 1) for s in box)] = True  # a second region further out
    assert masked_ssim_mean(pred, target, mask | ring, 4.0) == pytest.approx(
        ssim_map(pred, target, 4.0)[mask | ring].mean(), rel=1e-13, abs=0)
    assert math.isnan(masked_ssim_mean(pred, target, np.zeros_like(mask), 4.0))


@pytest.mark.parametrize("where", ["interior", "touching_the_edge", "whole_volume"])
def test_volume_ssim_on_the_non_zero_box_equals_scikit_image_on_the_whole_volume(where):
    """A brain in a zero background: the whole volume's SSIM (border excluded) from the map on the
    non-zero box, every other window counted as exactly 1, as scikit-image computes everywhere."""
    pred, target, _ = _pair(shape=(40, 36, 30))
    brain = np.zeros(pred.shape, bool)
    brain[{"interior": np.s_[12:25, 10:20, 9:18], "touching_the_edge": np.s_[0:9, 20:36, 5:12],
           "whole_volume": np.s_[:, :, :]}[where]] = True
    pred, target = np.where(brain, pred, 0.0), np.where(brain, target, 0.0)
    mask = brain & (np.arange(pred.shape[0])[:, None, None] % 3 > 0)  # inside the non-zero part
    ssim, ssim_full = volume_ssim(pred, target, mask, 4.0)
    assert ssim_full == pytest.approx(_skimage_ssim(pred, target, 4.0), rel=1e-13, abs=0)
    assert ssim == pytest.approx(ssim_map(pred, target, 4.0)[mask].mean(), rel=1e-13, abs=0)
    if where != "whole_volume":
        assert ssim_full > ssim  # the zero background's windows count, as 1
    assert volume_ssim(pred, target, mask.astype(np.uint8), 4.0) == (ssim, ssim_full)  # a 0/1 mask is a mask


@pytest.mark.parametrize("where", list(MASK_BOXES))
def test_scale_invariant_metrics_on_the_mask_box_equal_the_whole_volume(where):
    """Computed on the mask's box widened by the SSIM window: the values of the whole volume."""
    pred, target, _ = _pair(shape=(40, 36, 30))
    mask, _ = _mask_in_a_box(pred.shape, where)
    zp, zt = zscore_inside(pred, mask), zscore_inside(target, mask)
    r = float(zt[mask].max() - zt[mask].min()) or 1.0
    got = scale_invariant_metrics(pred, target, mask)
    assert got["ssim_z"] == pytest.approx(ssim_map(zp, zt, r)[mask].mean(), rel=1e-13, abs=0)
    with np.errstate(divide="ignore"):  # one voxel: both z-scores 0, an infinite PSNR
        assert got["psnr_z"] == pytest.approx(10 * np.log10(r**2 / np.mean((zp[mask] - zt[mask]) ** 2)), rel=1e-13)
    assert got["mae_z"] == pytest.approx(np.abs(zp[mask] - zt[mask]).mean(), rel=1e-13)
    assert got["sharpness"] == pytest.approx(sharpness_ratio(zp, zt, mask), rel=1e-13, nan_ok=True)
    with pytest.raises(ValueError, match="the mask is empty"):
        scale_invariant_metrics(pred, target, np.zeros_like(mask))


def test_one_target_cache_scores_every_prediction_as_it_scores_each_alone():
    """evaluate keeps the real T2's side of the metrics for all its methods: each method's values
    must be exactly those it gets alone, whatever the prediction (one non-zero outside the mask
    widens the volume SSIM's box beyond the target's)."""
    _, target, _ = _pair(shape=(40, 42, 30))
    mask = np.zeros(target.shape, bool)
    mask[12:28, 12:30, 6:24] = True
    mask[:, :, 12:15] = False
    target = np.where(ndimage.binary_dilation(mask, iterations=2), target, 0.0)  # a skull-stripped T2
    labels = mask.astype(np.int16) * (1 + (target > 0))
    rng = np.random.default_rng(3)
    predictions = [np.where(mask, target + rng.normal(size=target.shape), 0),
                   target * 0.5 + 2.0 * rng.normal(size=target.shape),  # non-zero everywhere
                   np.where(mask, -target, 0),
                   np.where(mask, rng.normal(size=target.shape), 0)]
    cache = TargetCache()
    for pred in predictions:
        shared = {**volume_metrics(pred, target, mask, None, labels, cache),
                  **literature_slice_metrics(pred, target, mask, cache=cache)}
        alone = {**volume_metrics(pred, target, mask, None, labels), **literature_slice_metrics(pred, target, mask)}
        assert shared == alone
    with pytest.raises(ValueError, match="one target and mask"):
        volume_metrics(predictions[0], target.copy(), mask, None, labels, cache)


def test_volume_metrics_match_references():
    pred, target, mask = _pair()
    m = volume_metrics(pred, target, mask, data_range=None)
    inside = mask.astype(bool)
    r = target[inside].max() - target[inside].min()
    assert m["data_range"] == pytest.approx(r)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(target[inside], pred[inside], data_range=r))
    assert m["psnr_full"] == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=r))
    assert m["ssim_full"] == pytest.approx(_skimage_ssim(pred, target, r))
    _, smap = _skimage_ssim(pred, target, r, full=True)
    assert m["ssim"] == pytest.approx(smap[inside].mean())
    per_slice = []
    for k in range(target.shape[2]):
        if inside[:, :, k].any():
            _, s2 = _skimage_ssim(pred[:, :, k], target[:, :, k], r, full=True)
            per_slice.append(s2[inside[:, :, k]].mean())
    assert m["ssim2d"] == pytest.approx(np.mean(per_slice))
    assert m["mae"] == pytest.approx(np.abs(pred - target)[inside].mean())
    assert m["mae_full"] == pytest.approx(np.abs(pred - target).mean())
    assert m["nrmse"] == pytest.approx(np.sqrt(((pred - target)[inside] ** 2).mean()) / r)
    assert m["pearson"] == pytest.approx(np.corrcoef(pred[inside], target[inside])[0, 1])


def test_identical_volumes_give_inf_psnr_and_unit_ssim():
    _, target, mask = _pair()
    m = volume_metrics(target.copy(), target, mask, data_range=4.0)
    assert m["psnr"] == math.inf and m["psnr_full"] == math.inf
    assert m["ssim"] == pytest.approx(1.0) and m["ssim2d"] == pytest.approx(1.0)
    assert m["mae"] == 0 and m["nrmse"] == 0 and m["pearson"] == pytest.approx(1.0)


def test_constant_offset_known_values():
    _, target, mask = _pair()
    m = volume_metrics(target + 0.5, target, mask, data_range=4.0)
    assert m["data_range"] == 4.0
    assert m["mae"] == pytest.approx(0.5) and m["mae_full"] == pytest.approx(0.5)
    assert m["psnr"] == pytest.approx(10 * math.log10(16 / 0.25))
    assert m["nrmse"] == pytest.approx(0.5 / 4.0)
    assert m["pearson"] == pytest.approx(1.0)


def test_per_tissue_mae_named_by_phantom_tissues():
    assert TISSUES[3] == "csf" and TISSUES[5] == "white_matter"
    _, target, mask = _pair()
    labels = np.zeros(target.shape, np.int16)
    labels[5:10] = 3
    labels[10:15] = 5
    labels[15:17] = 7
    pred = target + np.where(labels == 3, 2.0, 0.0) + np.where(labels == 5, -1.0, 0.0)
    m = volume_metrics(pred, target, mask, data_range=4.0, labels=labels)
    assert m["mae_csf"] == pytest.approx(2.0)
    assert m["mae_white_matter"] == pytest.approx(1.0)
    assert m["mae_label7"] == 0.0
    assert "mae_background" not in m


def test_literature_protocol_scales_each_slice_by_its_own_range():
    rng = np.random.default_rng(3)
    target = rng.uniform(0, 1, size=(20, 22, 6))
    target[..., 0] = 0  # an empty slice is skipped
    pred = 3.0 * target  # same up to per-slice scaling -> perfect under this protocol
    lit = literature_slice_metrics(pred, target)
    assert lit["n_slices_lit"] == 5 and lit["psnr_lit"] > 250 and lit["ssim_lit"] == pytest.approx(1.0)
    noisy = target + 0.05 * rng.normal(size=target.shape)
    lit = literature_slice_metrics(noisy, target)
    expected_psnr, expected_ssim = [], []
    for k in range(1, 6):
        t = (target[..., k] - target[..., k].min()) / np.ptp(target[..., k])
        p = (noisy[..., k] - noisy[..., k].min()) / np.ptp(noisy[..., k])
        expected_psnr.append(peak_signal_noise_ratio(t, p, data_range=1.0))
        expected_ssim.append(_skimage_ssim(p, t, 1.0))
    assert lit["psnr_lit"] == pytest.approx(np.mean(expected_psnr))
    assert lit["ssim_lit"] == pytest.approx(np.mean(expected_ssim))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.ones((4, 4, 5)))


def _textured_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture inside a ball: something with edges for sharpness to see."""
    rng = np.random.default_rng(seed)
    grid = np.indices((24, 24, 24)) - 11.5
    mask = (grid**2).sum(0) < 10.0**2
    texture = ndimage.gaussian_filter(rng.normal(size=(24, 24, 24)), 1.0) * 5.0 + 2.0
    return np.where(mask, texture, 0.0).astype(np.float32), mask


def test_scale_invariant_metrics_ignore_gain_and_offset_only():
    target, mask = _textured_volume()
    affine = np.where(mask, 0.4 * target + 3.0, 0.0)  # right anatomy, other units
    metrics = volume_metrics(affine, target, mask)
    assert metrics["psnr_z"] > 100.0 and metrics["mae_z"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["ssim_z"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["sharpness"] == pytest.approx(1.0, rel=1e-6)
    assert metrics["psnr"] < 30.0  # the units-bound metrics do see the different units
    noisy = target + np.random.default_rng(1).normal(0.0, 1.0, target.shape).astype(np.float32) * mask
    worse = volume_metrics(noisy, target, mask)
    assert worse["psnr_z"] < 30.0 and worse["mae_z"] > 0.1


def test_slice_psnr_z_is_the_volume_psnr_z_taken_apart():
    target, _ = _textured_volume()
    mask = np.zeros(target.shape, bool)
    mask[4:20, 4:20, 4:20] = True  # every kept slice holds the same number of mask voxels
    mask[:, :, 2] = True  # a slice of its own
    noisy = target + np.random.default_rng(2).normal(0.0, 1.0, target.shape).astype(np.float32)
    per_slice = slice_psnr_z(noisy, target, mask)
    assert len(per_slice) == 17
    speck = mask.copy()
    speck[2:4, 2:4, 22] = True  # too few voxels to score: left out
    assert len(slice_psnr_z(noisy, target, speck)) == 17 and int(speck[:, :, 22].sum()) < MIN_SLICE_VOXELS
    cube = np.zeros_like(mask)
    cube[4:20, 4:20, 4:20] = True
    volume = volume_metrics(noisy, target, mask)["psnr_z"]
    r2_over_mse = [10 ** (p / 10) for p in per_slice]
    weights = [mask[:, :, 2].sum()] + [cube[:, :, k].sum() for k in range(4, 20)]
    pooled = 10 * math.log10(sum(weights) / sum(w / q for w, q in zip(weights, r2_over_mse)))
    assert pooled == pytest.approx(volume, abs=1e-9)
    assert min(slice_psnr_z(0.5 * target + 1.0, target, mask)) > 100.0  # gain and offset cost nothing


def test_low_contrast_prediction_cannot_hide_its_errors():
    """Shrinking an error-laden prediction towards the mean shrinks its errors in the target's
    units, but not once both volumes are z-scored."""
    target, mask = _textured_volume()
    noise = np.random.default_rng(2).normal(0.0, 2.0, target.shape) * mask
    pred = np.where(mask, target + noise, 0.0)
    mean = float(target[mask].mean())
    shrunk = np.where(mask, mean + 0.3 * (pred - mean), 0.0)
    full, low = volume_metrics(pred, target, mask), volume_metrics(shrunk, target, mask)
    assert low["mae"] < full["mae"]  # the units-bound metric flatters the shrunk prediction
    assert low["psnr_z"] == pytest.approx(full["psnr_z"], abs=1e-9)
    assert low["mae_z"] == pytest.approx(full["mae_z"], abs=1e-9)


def test_sharpness_tells_blur_from_noise():
    target, mask = _textured_volume()
    blurred = np.where(mask, ndimage.gaussian_filter(target, 1.5), 0.0)
    noisy = target + np.random.default_rng(3).normal(0.0, 1.0, target.shape) * mask
    assert volume_metrics(blurred, target, mask)["sharpness"] < 0.7
    assert volume_metrics(noisy, target, mask)["sharpness"] > 1.2
