"""The model's grid: an input at another voxel size is synthesized at the training voxel size.

A network learns anatomy at the size its training voxels gave it; a customer's 0.9 mm 3D T1 or
5 mm slices show every structure at another size. :func:`synthesize_on_model_grid` resamples the
normalized T1 and its mask to the contract's voxel size (the field of view kept: voxel corners
aligned at both ends, so the grids share their centre), synthesizes there, and resamples the
result back onto the input's own grid. Downsampling is anti-aliased with a Gaussian of
sigma = (factor - 1) / 2 voxels (scikit-image's ``rescale`` convention), both ways.

Axes resampled: all three for a 3D model, a 2D model applied along all three axes, and a 2.5D
model (its neighbouring slices are a distance it learned); a plain 2D model only in-plane, keeping
the slice axis it was trained on. Axes within :data:`RESAMPLE_TOLERANCE` of the training voxel
size are left alone, so a subject of the training set is synthesized exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from mrsynth.backend import BatchPredictor
from mrsynth.config import DataConfig, EvalConfig
from mrsynth.data.contract import PreprocessingContract
from mrsynth.inference.volume import Synthesis, synthesize_subject

RESAMPLE_TOLERANCE = 0.05  # relative voxel-size difference per axis that is not resampled


@dataclass(frozen=True)
class ModelGrid:
    """An input grid and the grid the network runs on, per RAS+ axis."""

    input_shape: tuple[int, int, int]
    input_voxel_size: tuple[float, float, float]
    voxel_size: tuple[float, float, float]  # the model grid's: the training size on resampled axes
    shape: tuple[int, int, int]

    @property
    def factors(self) -> np.ndarray:
        """Input voxels per model voxel, per axis (> 1: the model grid is coarser)."""
        return np.asarray(self.voxel_size) / np.asarray(self.input_voxel_size)

    def describe(self) -> dict[str, Any]:
        """What was resampled, for the sidecar."""
        return {"resampled": True, "input_shape": list(self.input_shape),
                "input_voxel_size_mm": [round(v, 4) for v in self.input_voxel_size],
                "model_shape": list(self.shape), "model_voxel_size_mm": [round(v, 4) for v in self.voxel_size],
                "interpolation": "linear, Gaussian anti-aliasing when downsampling"}


def resampled_axes(dims: int, slice_axis: int, planes: str, context_slices: int) -> tuple[int, ...]:
    """The RAS+ axes brought to the training voxel size (see the module docstring)."""
    if dims == 3 or planes == "all" or context_slices > 0:
        return (0, 1, 2)
    return tuple(a for a in range(3) if a != slice_axis)


def plan_model_grid(input_shape: tuple[int, int, int], input_voxel_size: tuple[float, float, float],
                    training_voxel_size: tuple[float, float, float] | None,
                    axes: tuple[int, ...]) -> ModelGrid | None:
    """The model grid of an input, or None when it is the input's own (or the run recorded no size)."""
    if training_voxel_size is None:
        return None
    size = [float(v) for v in input_voxel_size]
    for axis in axes:
        if abs(training_voxel_size[axis] - size[axis]) > RESAMPLE_TOLERANCE * training_voxel_size[axis]:
            size[axis] = float(training_voxel_size[axis])
    if np.allclose(size, input_voxel_size):
        return None
    shape = tuple(max(1, int(round(n * s_in / s))) for n, s_in, s in zip(input_shape, input_voxel_size, size))
    return ModelGrid(tuple(input_shape), tuple(input_voxel_size), tuple(size), shape)  # type: ignore[arg-type]


def _resample(volume: np.ndarray, factors: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear resampling by ``factors`` (source voxels per output voxel), corners aligned,
    anti-aliased where the output is coarser."""
    source = np.asarray(volume, dtype=np.float32)
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    if np.any(sigma > 0):
        source = ndimage.gaussian_filter(source, sigma, mode="nearest")
    return ndimage.affine_transform(source, factors, offset=0.5 * factors - 0.5, output_shape=shape,
                                    order=1, mode="nearest").astype(np.float32, copy=False)


def to_model_grid(volume: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """An input-grid volume on the model grid."""
    return _resample(volume, grid.factors, grid.shape)


def mask_to_model_grid(mask: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """An input-grid mask on the model grid (uint8): where the resampled mask is at least half."""
    return (to_model_grid(np.asarray(mask) > 0, grid) >= 0.5).astype(np.uint8)


def to_input_grid(volume: np.ndarray, mask: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """A model-grid volume (meaningful inside ``mask``) back on the input grid.

    The outside is first filled with the nearest inside value, so the input mask's edge voxels
    are not darkened by the background they were never meant to carry.
    """
    inside = np.asarray(mask) > 0
    filled = np.asarray(volume, dtype=np.float32)
    if inside.any() and not inside.all():
        nearest = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
        filled = filled[tuple(nearest)]
    return _resample(filled, 1.0 / grid.factors, grid.input_shape)


def synthesize_on_model_grid(t1: np.ndarray, mask: np.ndarray, voxel_size: tuple[float, float, float],
                             predictor: BatchPredictor, data_cfg: DataConfig, eval_cfg: EvalConfig,
                             contract: PreprocessingContract, tta: str = "none"
                             ) -> tuple[Synthesis, ModelGrid | None]:
    """:func:`~mrsynth.inference.volume.synthesize_subject` at the training voxel size, delivered
    on the input's grid: clipped to the contract's T2 range and 0 outside the input's mask.

    ``t1`` is normalized and 0 outside ``mask`` (a preprocessed volume); ``voxel_size`` its
    RAS+ voxel size. Returns the synthesis and the model grid (None: the input's own was used).
    """
    axes = resampled_axes(predictor.model_config.dims, data_cfg.slice_axis, eval_cfg.planes,
                          data_cfg.context_slices)
    grid = plan_model_grid(t1.shape, voxel_size, contract.voxel_size, axes)
    if grid is None:
        return synthesize_subject(t1, mask, predictor, data_cfg, eval_cfg, contract.t2_range, tta=tta), None
    model_mask = mask_to_model_grid(mask, grid)
    model_t1 = np.where(model_mask > 0, to_model_grid(t1, grid), 0.0).astype(np.float32)
    synthesis = synthesize_subject(model_t1, model_mask, predictor, data_cfg, eval_cfg, contract.t2_range, tta=tta)
    inside = np.asarray(mask) > 0
    lo, hi = contract.t2_range
    t2 = np.where(inside, np.clip(to_input_grid(synthesis.t2, model_mask, grid), lo, hi), 0.0)
    spread = None
    if synthesis.spread is not None:
        spread = np.where(inside, to_input_grid(synthesis.spread, model_mask, grid), 0.0).astype(np.float32)
    return Synthesis(t2.astype(np.float32), spread, synthesis.clipped_fraction, synthesis.passes), grid
