"""Whole-volume inference reassembles predictor outputs exactly (2D slices, 3D blended patches)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mrsynth.config import DataConfig, EvalConfig, ModelConfig
from mrsynth.inference.volume import (
    crop_to,
    blend_weight,
    pad_to_multiple,
    patch_starts,
    synthesize_volume,
)


@dataclass
class AffinePredictor:
    """Stands in for a network: 2x + 1 per voxel, records the batch shapes it saw."""

    model_config: ModelConfig

    def __post_init__(self):
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.shape[-1] == 1
        self.shapes.append(batch.shape)
        return 2.0 * batch + 1.0


def _volume(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_pad_to_multiple_zero_pads_and_crops_back():
    x = _volume((5, 7, 9))
    padded, crop = pad_to_multiple(x, 4, axes=(0, 2))
    assert padded.shape == (8, 7, 12)
    assert np.all(padded[5:] == 0) and np.all(padded[:, :, 9:] == 0)
    np.testing.assert_array_equal(crop_to(padded, crop), x)
    same, crop = pad_to_multiple(x, 1, axes=(0, 1, 2))
    assert same.shape == x.shape and crop_to(same, crop).shape == x.shape


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_2d_every_slice_batched_and_reassembled(axis):
    t1 = _volume((9, 11, 13))
    predictor = AffinePredictor(ModelConfig(dims=2, depth=1, channel_mults=(1, 2)))
    out = synthesize_volume(t1, predictor, DataConfig(slice_axis=axis, patch_size=(8, 8)),
                            EvalConfig(inference_batch=4))
    np.testing.assert_allclose(out, 2 * t1 + 1, rtol=0, atol=1e-6)
    # all slices (foreground or not), in full batches of 4: the last one padded
    assert [s[0] for s in predictor.shapes] == [4] * -(-t1.shape[axis] // 4)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("shape", [(19, 23, 17), (8, 8, 8), (5, 20, 9)])
def test_3d_patches_cover_and_blend_exactly(shape, blend):
    t1 = _volume(shape, seed=1)
    predictor = AffinePredictor(ModelConfig(dims=3, depth=1, channel_mults=(1, 2)))
    data_cfg = DataConfig(patch_size=(8, 8, 8))
    done = []
    out = synthesize_volume(t1, predictor, data_cfg, EvalConfig(inference_batch=3, blend=blend),
                            progress=lambda d, n: done.append((d, n)))
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * t1 + 1, rtol=0, atol=1e-5)
    assert all(s[1:] == (8, 8, 8, 1) for s in predictor.shapes)
    assert done[-1][0] == done[-1][1]


def test_3d_blending_of_a_position_dependent_predictor_is_weighted_mean():
    """Two overlapping patches returning constants 0 and 1: the overlap gets their weighted mean."""
    calls = []

    class PatchIndex:
        model_config = ModelConfig(dims=3, depth=1, channel_mults=(1, 2))

        def __call__(self, batch):
            out = np.empty_like(batch)
            for i in range(len(batch)):
                out[i] = len(calls)
                calls.append(i)
            return out

    out = synthesize_volume(np.zeros((4, 4, 6), np.float32), PatchIndex(),
                            DataConfig(patch_size=(4, 4, 4)), EvalConfig(patch_overlap=0.5, blend="constant"))
    assert patch_starts(6, 4, 0.5) == [0, 2]
    np.testing.assert_allclose(out[..., :2], 0)
    np.testing.assert_allclose(out[..., 2:4], 0.5)
    np.testing.assert_allclose(out[..., 4:], 1)


def test_patch_starts_cover_the_axis_with_nominal_stride():
    for size, patch, overlap in [(100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (97, 16, 0.0)]:
        starts = patch_starts(size, patch, overlap)
        assert starts[0] == 0 and starts[-1] + patch == max(size, patch)
        stride = int(patch * (1 - overlap))
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))


def test_gaussian_importance_is_nnunet_like():
    w = blend_weight((16, 8, 12), "gaussian")
    assert w.max() == pytest.approx(1.0) and w.min() > 0
    centre = w[8, 4, 6]
    assert w[0, 0, 0] < 0.01 * centre
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)  # symmetric about the centre


@dataclass
class ChannelPredictor:
    """A 2.5D stand-in: returns input channel ``channel`` (0 = the lowest neighbour slice)."""

    model_config: ModelConfig
    channel: int

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[-1] == self.model_config.in_channels
        return batch[..., self.channel : self.channel + 1]


@pytest.mark.parametrize("axis", [0, 2])
def test_context_slices_feed_neighbours_in_order_and_repeat_the_edges(axis):
    t1 = _volume((9, 11, 13))
    model = ModelConfig(dims=2, depth=1, channel_mults=(1, 2), in_channels=5)
    lowest = synthesize_volume(t1, ChannelPredictor(model, 0), DataConfig(slice_axis=axis, patch_size=(8, 8)),
                               EvalConfig(inference_batch=4))
    n = t1.shape[axis]
    expected = np.take(t1, np.clip(np.arange(n) - 2, 0, n - 1), axis=axis)  # slice i - 2, clamped
    np.testing.assert_array_equal(lowest, expected)
    centre = synthesize_volume(t1, ChannelPredictor(model, 2), DataConfig(slice_axis=axis, patch_size=(8, 8)),
                               EvalConfig(inference_batch=4))
    np.testing.assert_array_equal(centre, t1)
