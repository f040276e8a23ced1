"""Augmentation: the batched spatial warp, and the scanner-like intensity augmentation of the input
T1 (a smooth bias field and a random contrast)."""
from __future__ import annotations

import numpy as np
import pytest

from mrsynth.config import DataConfig
from scipy import ndimage

from mrsynth.data import augment
from mrsynth.data.augment import augment_intensity, bias_field, warp_batch
from mrsynth.data.sampling import build_epoch_index, draw_sample

from data_fixtures import synthetic_head

SCANNER = dict(bias_field=0.4, contrast_range=0.3)


def _arrays() -> dict[str, np.ndarray]:
    head = synthetic_head()
    return {"t1": head["t1"] / 100.0, "t2": head["t2"] / 100.0, "mask": head["mask"]}


def _draw(cfg: DataConfig, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
    arrays = _arrays()
    table = build_epoch_index([arrays["mask"]], 2, cfg)
    return draw_sample(arrays, table.rows[len(table) // 2], table.bboxes[0], 2, cfg, seed=3, epoch=epoch, index=index)


def test_scanner_augmentation_is_a_function_of_seed_epoch_index_and_touches_only_t1_inside_the_mask():
    cfg = DataConfig(patch_size=(16, 16), flip_prob=0.5, **SCANNER)
    plain_cfg = DataConfig(patch_size=(16, 16), flip_prob=0.5)
    sample, again = _draw(cfg, index=4), _draw(cfg, index=4)
    assert all(np.array_equal(sample[k], again[k]) for k in sample)
    assert not np.allclose(sample["t1"], _draw(cfg, index=4, epoch=1)["t1"])
    plain = _draw(plain_cfg, index=4)  # same location and flips: the spatial draws do not move
    assert np.array_equal(sample["t2"], plain["t2"]) and np.array_equal(sample["mask"], plain["mask"])
    inside = plain["mask"] > 0
    assert np.array_equal(sample["t1"][~inside], plain["t1"][~inside])
    assert not np.allclose(sample["t1"][inside], plain["t1"][inside])


@pytest.mark.parametrize("shape", [(24, 28), (16, 16, 12)])
def test_bias_field_is_bounded_by_its_strength_and_reaches_it(shape):
    strength = 0.3
    fields = [bias_field(shape, np.random.default_rng(seed), strength) for seed in range(40)]
    logs = np.stack([np.log(f) for f in fields])
    assert np.abs(logs).max() <= strength + 1e-5
    assert np.abs(logs).max(axis=tuple(range(1, logs.ndim))).max() > 0.8 * strength
    assert np.array_equal(bias_field(shape, np.random.default_rng(0), 0.0), np.ones(shape, np.float32))


def test_bias_field_multiplies_the_signal_above_the_darkest_brain_voxel():
    arrays = _arrays()
    t1, mask = arrays["t1"][:, :, 10], arrays["mask"][:, :, 10]
    inside = mask > 0
    strength = 0.5
    out = augment_intensity(t1, mask, np.random.default_rng(1), DataConfig(bias_field=strength))
    low = t1[inside].min()
    signal = t1[inside] - low
    ratio = (out[inside] - low)[signal > 1e-3] / signal[signal > 1e-3]
    assert np.exp(-strength) - 1e-4 <= ratio.min() and ratio.max() <= np.exp(strength) + 1e-4
    assert ratio.std() > 1e-3  # a field, not a constant factor
    assert np.array_equal(out[~inside], t1[~inside])


def test_contrast_scales_deviations_from_the_in_mask_mean_within_its_range():
    arrays = _arrays()
    t1, mask = arrays["t1"][:, :, 10], arrays["mask"][:, :, 10]
    inside = mask > 0
    spread = 0.3
    factors = []
    for seed in range(60):
        out = augment_intensity(t1, mask, np.random.default_rng(seed), DataConfig(contrast_range=spread))
        mean = t1[inside].mean()
        assert out[inside].mean() == pytest.approx(mean, abs=1e-5)
        factors.append(np.std(out[inside] - mean) / np.std(t1[inside] - mean))
    assert 1 - spread - 1e-4 <= min(factors) and max(factors) <= 1 + spread + 1e-4
    assert max(factors) - min(factors) > spread  # the range is used, not just respected


@pytest.mark.parametrize("size", [(20, 24), (10, 12, 14)])
def test_batched_warp_equals_a_per_sample_linear_warp_with_zeros_outside(size, monkeypatch):
    """warp_batch is scipy's order-1 affine_transform ('grid-constant' 0) of every sample and
    channel, rotation, scaling and flips included, in one vectorized call."""
    rng = np.random.default_rng(0)
    batch, channels, ndim = 3, 2, len(size)
    images = rng.standard_normal((batch, *size, channels)).astype(np.float32)
    matrices = np.stack([np.diag(rng.choice([-1.0, 1.0], ndim)) @ (np.eye(ndim) + 0.15 * rng.standard_normal((ndim, ndim)))
                         for _ in range(batch)])
    padded = np.pad(np.moveaxis(images, -1, 0), [(0, 0), (0, 0)] + [(1, 1)] * ndim)  # channel-major
    got = np.moveaxis(warp_batch(padded, matrices), 0, -1)
    centre = (np.asarray(size) - 1) / 2.0
    for b in range(batch):
        for c in range(channels):
            want = ndimage.affine_transform(images[b, ..., c].astype(np.float64), matrices[b],
                                            offset=centre - matrices[b] @ centre, order=1, mode="grid-constant")
            np.testing.assert_allclose(got[b, ..., c], want, atol=2e-5)
    flipped = warp_batch(padded, np.stack([np.diag([-1.0] + [1.0] * (ndim - 1))] * batch))
    np.testing.assert_array_equal(np.moveaxis(flipped, 0, -1), images[:, ::-1])
    monkeypatch.setattr(augment, "WARP_CHUNK_VOXELS", 1)  # one sample per chunk: the same result
    np.testing.assert_array_equal(np.moveaxis(warp_batch(padded, matrices), 0, -1), got)
    nearest = warp_batch(padded, matrices, nearest=1)  # the last channel (the mask): order 0
    np.testing.assert_array_equal(nearest[0], got[..., 0])
    for b in range(batch):
        want = ndimage.affine_transform(images[b, ..., 1], matrices[b], offset=centre - matrices[b] @ centre,
                                        order=0, mode="grid-constant")
        assert np.mean(nearest[1, b] == want) > 0.99  # ties at .5 may round the other way


def test_a_stack_of_context_slices_meets_one_scanner_with_each_slices_own_statistics_and_noise():
    """Channels last (the 2.5D input): the same contrast, gamma and bias field for every slice, as
    if each slice were augmented alone from a copy of the sample's generator, each slice keeping
    its own in-mask mean and range; the noise differs from slice to slice (one channel's is the
    first slice's)."""
    arrays = _arrays()
    stack, mask = arrays["t1"][:, :, 8:13], arrays["mask"][:, :, 10]
    inside = mask > 0
    stack = stack * np.linspace(0.5, 1.5, 5, dtype=np.float32)  # slices with different statistics
    cfg = DataConfig(contrast_range=0.3, gamma_range=0.3, bias_field=0.4)
    together = augment_intensity(stack, mask, np.random.default_rng(7), cfg)
    alone = np.stack([augment_intensity(np.ascontiguousarray(stack[..., c]), mask, np.random.default_rng(7), cfg)
                      for c in range(5)], axis=-1)
    assert together.shape == stack.shape and together.dtype == np.float32
    np.testing.assert_array_equal(together, alone)

    noisy = DataConfig(contrast_range=0.3, gamma_range=0.3, bias_field=0.4, noise_std=0.05)
    with_noise = augment_intensity(stack, mask, np.random.default_rng(7), noisy)
    added = (with_noise - together)[inside]  # (voxels, 5): the noise each slice got
    assert np.allclose(added.std(axis=0), 0.05, rtol=0.2)  # 312 voxels: the SD of an SD estimate is 4%
    assert np.abs(np.corrcoef(added.T)[np.triu_indices(5, 1)]).max() < 0.2  # not one pattern repeated
    first = augment_intensity(np.ascontiguousarray(stack[..., 0]), mask, np.random.default_rng(7), noisy)
    np.testing.assert_array_equal(with_noise[..., 0], first)
