"""Whole-volume inference, framework-free: slices (2D) or blended overlapping patches (3D).

Both backends only supply a batch :class:`~mrsynth.backend.Predictor`; assembling a volume from
its outputs happens here, once, so the JAX and PyTorch runs are evaluated by the same code.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mrsynth.backend import Predictor
from mrsynth.config import DataConfig, EvalConfig
from mrsynth.data.sampling import context_indices

# progress(done, total): called after every predictor batch.
ProgressFn = Callable[[int, int], None]
TTA_CHOICES = ("none", "flip")


@dataclass
class Synthesis:
    """A synthesized subject as every command delivers it, in normalized T2 units.

    ``t2`` is clipped to the training T2 range and 0 outside the mask (the background value
    of a normalized real T2); ``spread`` is the voxel-wise standard deviation over the
    test-time-augmentation passes (None without TTA).
    """

    t2: np.ndarray
    spread: np.ndarray | None
    clipped_fraction: float  # of the voxels inside the mask
    passes: int


def tta_flip_axes(dims: int, slice_axis: int) -> tuple[int, ...]:
    """Axes flipped by ``--tta flip``: the in-plane axes of a 2D model, all three for 3D.

    (Flipping along the slice axis only reorders a 2D model's slices: no new view.)
    """
    return tuple(a for a in range(3) if dims == 3 or a != slice_axis)


def synthesize_subject(
    t1: np.ndarray,
    mask: np.ndarray,
    predictor: Predictor,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    t2_range: tuple[float, float],
    tta: str = "none",
    progress: ProgressFn | None = None,
) -> Synthesis:
    """Whole-volume synthesis with the output contract: optional flip TTA, clipping, masking.

    The one path behind validation, ``evaluate`` and ``predict``, so what is evaluated is
    what a user gets.
    """
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    inside = np.asarray(mask) > 0
    if tta == "none":
        flip_sets: list[tuple[int, ...]] = [()]
    else:
        axes = tta_flip_axes(predictor.model_config.dims, data_cfg.slice_axis)
        flip_sets = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    total = np.zeros(t1.shape, dtype=np.float64)
    total_sq = np.zeros(t1.shape, dtype=np.float64) if len(flip_sets) > 1 else None
    for flips in flip_sets:
        view = np.flip(t1, axis=flips) if flips else t1
        pred = synthesize_volume(np.ascontiguousarray(view), predictor, data_cfg, eval_cfg, progress)
        pred = (np.flip(pred, axis=flips) if flips else pred).astype(np.float64)
        total += pred
        if total_sq is not None:
            total_sq += pred**2
    mean = total / len(flip_sets)
    spread = None
    if total_sq is not None:
        spread = np.sqrt(np.maximum(total_sq / len(flip_sets) - mean**2, 0.0)).astype(np.float32)
        spread[~inside] = 0.0
    lo, hi = t2_range
    clipped = int(np.count_nonzero(((mean < lo) | (mean > hi)) & inside))
    out = np.clip(mean, lo, hi).astype(np.float32)
    out[~inside] = 0.0
    return Synthesis(out, spread, clipped / max(1, int(inside.sum())), len(flip_sets))


def pad_to_multiple(
    x: np.ndarray, multiple: int, axes: Sequence[int]
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad ``axes`` of ``x`` (at the high end) up to a multiple of ``multiple``.

    Zero is the background after normalization, so padding adds no spurious structure.
    Returns the padded array and the slices that crop it back (``crop_to``).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    target = list(x.shape)
    for axis in axes:
        target[axis] = -(-x.shape[axis] // multiple) * multiple
    return pad_to_shape(x, target)


def pad_to_shape(x: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad ``x`` at the high end of each axis up to ``shape`` (never shrinks)."""
    if len(shape) != x.ndim:
        raise ValueError(f"shape {tuple(shape)} has {len(shape)} axes, array has {x.ndim}")
    widths = [(0, max(0, int(t) - n)) for n, t in zip(x.shape, shape)]
    crop = tuple(slice(0, n) for n in x.shape)
    if not any(hi for _, hi in widths):
        return x, crop
    return np.pad(x, widths, mode="constant", constant_values=0), crop


def crop_to(x: np.ndarray, crop: tuple[slice, ...]) -> np.ndarray:
    """Undo ``pad_to_multiple``/``pad_to_shape`` with the slices they returned."""
    return x[crop]


def synthesize_volume(
    t1: np.ndarray,
    predictor: Predictor,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Normalized RAS+ T1 (D, H, W) -> normalized T2 (D, H, W), float32.

    2D models see every slice along ``data_cfg.slice_axis`` (also empty ones, so the output
    covers the whole volume); 3D models see overlapping ``data_cfg.patch_size`` patches blended
    with ``eval_cfg.blend`` weights.
    """
    if t1.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {t1.shape}")
    t1 = np.asarray(t1, dtype=np.float32)
    dims = predictor.model_config.dims
    if dims == 2:
        return _synthesize_slices(t1, predictor, data_cfg.slice_axis, eval_cfg.inference_batch, progress)
    if dims == 3:
        return _synthesize_patches(t1, predictor, tuple(data_cfg.patch_size), eval_cfg, progress)
    raise ValueError(f"model dims must be 2 or 3, got {dims}")


def _batches(n: int, batch: int) -> Iterator[range]:
    batch = max(1, int(batch))
    for start in range(0, n, batch):
        yield range(start, min(n, start + batch))


def _synthesize_slices(
    t1: np.ndarray, predictor: Predictor, axis: int, batch: int, progress: ProgressFn | None
) -> np.ndarray:
    slices = np.moveaxis(t1, axis, 0)  # (N, H, W)
    context = (predictor.model_config.in_channels - 1) // 2  # 2.5D: neighbours on each side
    out = np.empty(slices.shape, dtype=np.float32)
    for idx in _batches(len(slices), batch):
        chunk = np.stack([slices[context_indices(i, context, len(slices))] for i in idx])  # (b, C, H, W)
        chunk = np.ascontiguousarray(np.moveaxis(chunk, 1, -1))
        pred = np.asarray(predictor(chunk), dtype=np.float32)
        if pred.shape != chunk.shape[:-1] + (1,):
            raise ValueError(f"predictor returned shape {pred.shape} for input {chunk.shape}")
        out[idx.start : idx.stop] = pred[..., 0]
        if progress is not None:
            progress(idx.stop, len(slices))
    return np.moveaxis(out, 0, axis)


def patch_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Patch start positions covering ``[0, size)`` with stride at most ``patch * (1 - overlap)``.

    Like nnU-Net: the first patch starts at 0, the last ends at ``size``, the rest are spaced
    evenly in between (so the actual stride may be slightly smaller than the nominal one).
    """
    if size <= patch:
        return [0]
    stride = max(1, int(patch * (1.0 - overlap)))
    count = math.ceil((size - patch) / stride) + 1
    step = (size - patch) / (count - 1)
    return [int(round(i * step)) for i in range(count)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """nnU-Net's blending weights: a Gaussian with sigma = patch/8 per axis, max 1, no zeros."""
    grids = np.meshgrid(*[np.arange(p, dtype=np.float64) for p in patch], indexing="ij")
    weight = np.ones(tuple(patch), dtype=np.float64)
    for grid, p in zip(grids, patch):
        centre = (p - 1) / 2.0
        sigma = p * sigma_scale
        weight *= np.exp(-0.5 * ((grid - centre) / sigma) ** 2)
    weight /= weight.max()
    weight[weight == 0] = weight[weight > 0].min()
    return weight.astype(np.float32)


def _synthesize_patches(
    t1: np.ndarray,
    predictor: Predictor,
    patch: tuple[int, int, int],
    eval_cfg: EvalConfig,
    progress: ProgressFn | None,
) -> np.ndarray:
    if len(patch) != 3:
        raise ValueError(f"3D inference needs a 3-number patch size, got {patch}")
    padded, crop = pad_to_shape(t1, [max(n, p) for n, p in zip(t1.shape, patch)])
    if eval_cfg.blend == "gaussian":
        weight = gaussian_importance(patch)
    else:
        weight = np.ones(patch, dtype=np.float32)
    starts = [
        (z, y, x)
        for z in patch_starts(padded.shape[0], patch[0], eval_cfg.patch_overlap)
        for y in patch_starts(padded.shape[1], patch[1], eval_cfg.patch_overlap)
        for x in patch_starts(padded.shape[2], patch[2], eval_cfg.patch_overlap)
    ]
    accum = np.zeros(padded.shape, dtype=np.float64)
    weight_sum = np.zeros(padded.shape, dtype=np.float64)
    for idx in _batches(len(starts), eval_cfg.inference_batch):
        windows = [
            tuple(slice(s, s + p) for s, p in zip(starts[i], patch)) for i in idx
        ]
        chunk = np.stack([padded[w] for w in windows])[..., None]
        pred = np.asarray(predictor(chunk), dtype=np.float32)
        if pred.shape != chunk.shape:
            raise ValueError(f"predictor returned shape {pred.shape} for input {chunk.shape}")
        for window, patch_pred in zip(windows, pred[..., 0]):
            accum[window] += patch_pred * weight
            weight_sum[window] += weight
        if progress is not None:
            progress(idx.stop, len(starts))
    return crop_to((accum / weight_sum).astype(np.float32), crop)
