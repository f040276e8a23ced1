"""The model grid: which axes are resampled, the plan, and the resampling both ways."""
from __future__ import annotations

import numpy as np
import pytest

from mrsynth.inference.grid import (
    RESAMPLE_TOLERANCE,
    mask_to_model_grid,
    plan_model_grid,
    resampled_axes,
    to_input_grid,
    to_model_grid,
)


def test_resampled_axes_follow_the_model():
    assert resampled_axes(2, 2, "slice_axis", 0) == (0, 1)  # plain 2D: in-plane only
    assert resampled_axes(2, 0, "slice_axis", 0) == (1, 2)
    assert resampled_axes(2, 2, "slice_axis", 2) == (0, 1, 2)  # 2.5D: the neighbours' distance too
    assert resampled_axes(2, 2, "all", 0) == (0, 1, 2)
    assert resampled_axes(3, 2, "slice_axis", 0) == (0, 1, 2)


def test_plan_keeps_the_field_of_view_and_leaves_near_sizes_alone():
    assert plan_model_grid((100, 100, 40), (1.0, 1.0, 3.0), None, (0, 1)) is None  # no recorded size
    near = 1.0 + 0.9 * RESAMPLE_TOLERANCE
    assert plan_model_grid((100, 100, 40), (near, near, 3.0), (1.0, 1.0, 1.0), (0, 1)) is None
    grid = plan_model_grid((100, 100, 40), (1.0, 1.0, 3.0), (2.0, 2.0, 1.0), (0, 1))
    assert grid.shape == (50, 50, 40) and grid.voxel_size == (2.0, 2.0, 3.0)  # slice axis kept
    grid = plan_model_grid((100, 100, 40), (1.0, 1.0, 3.0), (2.0, 2.0, 1.0), (0, 1, 2))
    assert grid.shape == (50, 50, 120) and np.allclose(grid.factors, [2.0, 2.0, 1 / 3])


def test_resampling_is_centred_and_round_trips_smooth_images():
    """A linear ramp stays a ramp with the same world coordinates (corners aligned, centres shared),
    and a smooth image comes back from a 2x coarser grid within a small error."""
    x = np.arange(64, dtype=np.float32)
    ramp = np.broadcast_to(x[:, None, None], (64, 8, 8)).copy()
    grid = plan_model_grid(ramp.shape, (1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0, 1, 2))
    coarse = to_model_grid(ramp, grid)
    # model voxel j covers input voxels 2j and 2j+1: its centre is at input coordinate 2j + 0.5
    assert np.allclose(coarse[1:-1, 4, 4], 2 * np.arange(1, 31) + 0.5, atol=1e-4)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in (64, 48, 40)], indexing="ij")
    smooth = np.exp(-(g[0] ** 2 + g[1] ** 2 + g[2] ** 2) * 2).astype(np.float32)
    grid = plan_model_grid(smooth.shape, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0, 1, 2))
    back = to_input_grid(to_model_grid(smooth, grid), np.ones(grid.shape), grid)
    assert back.shape == smooth.shape and float(np.abs(back - smooth).max()) < 0.03


def test_downsampling_is_anti_aliased():
    """A checkerboard at the input's Nyquist frequency must not alias into a pattern on the coarse grid."""
    idx = np.indices((64, 64, 4))
    checker = ((idx[0] + idx[1]) % 2).astype(np.float32)
    grid = plan_model_grid(checker.shape, (1.0, 1.0, 1.0), (3.0, 3.0, 1.0), (0, 1))
    coarse = to_model_grid(checker, grid)
    # model voxel centres land on input voxels 3j + 1: plain interpolation returns the checker (std 0.5)
    assert float(coarse[2:-2, 2:-2].std()) < 0.01
    assert float(coarse.mean()) == pytest.approx(0.5, abs=0.02)


def test_mask_edges_are_not_darkened_on_the_way_back():
    """Outside the model-grid mask the prediction is 0; the input mask's edge voxels must get the
    nearest inside value, not a blend with that background."""
    mask = np.zeros((40, 40, 40), np.uint8)
    mask[8:32, 8:32, 8:32] = 1
    grid = plan_model_grid(mask.shape, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (0, 1, 2))
    model_mask = mask_to_model_grid(mask, grid)
    pred = np.where(model_mask > 0, 3.0, 0.0).astype(np.float32)
    back = to_input_grid(pred, model_mask, grid)
    assert np.allclose(back[mask > 0], 3.0, atol=1e-5)
