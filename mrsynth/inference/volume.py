"""Whole-volume inference, framework-free: slices (2D) or blended overlapping patches (3D).

What to predict and how to assemble it (the slices, the patch grid, full-size batches, the
blending weights) is planned here, once, framework-free, so the JAX and PyTorch runs are
evaluated by the same code; each backend's :class:`~mrsynth.backend.Predictor` supplies only
the device verbs that carry the plan out, so the volume stays on its device until the end.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrsynth.backend import BatchPredictor, Predictor
from mrsynth.config import DataConfig, EvalConfig
from mrsynth.data.sampling import context_indices

# progress(done, total): called after every predictor batch.
ProgressFn = Callable[[int, int], None]
TTA_CHOICES = ("none", "flip")
PLANES_CHOICES = ("slice_axis", "all")


@dataclass
class Synthesis:
    """A synthesized subject as every command delivers it, in normalized T2 units.

    ``t2`` is clipped to the training T2 range and 0 outside the mask (the background value
    of a normalized real T2); ``spread`` is the voxel-wise standard deviation over the
    passes (flip TTA, the three slice directions; None with a single pass).
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


def inference_views(dims: int, axis: int, tta: str, planes: str) -> list[tuple[int, tuple[int, ...]]]:
    """The passes of one synthesis as (slice axis, flipped axes): the slice axis alone, or all
    three with ``planes`` "all" (2D), each with every combination of its flips under flip TTA."""
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    if planes not in PLANES_CHOICES or (planes == "all" and dims != 2):
        raise ValueError(f"planes must be one of {PLANES_CHOICES} ('all' for a 2D model), got {planes!r}")
    views = []
    for view_axis in ((0, 1, 2) if planes == "all" else (axis,)):
        flips = tta_flip_axes(dims, view_axis) if tta == "flip" else ()
        views += [(view_axis, c) for r in range(len(flips) + 1) for c in itertools.combinations(flips, r)]
    return views


def synthesize_subject(
    t1: np.ndarray,
    mask: np.ndarray,
    predictor: BatchPredictor,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    t2_range: tuple[float, float],
    tta: str = "none",
    progress: ProgressFn | None = None,
) -> Synthesis:
    """Whole-volume synthesis with the output contract: optional flip TTA and fusion of the three
    slice directions (``eval_cfg.planes``), clipping, masking.

    The one path behind validation, ``evaluate`` and ``predict``, so what is evaluated is
    what a user gets.
    """
    device = volume_predictor(predictor)
    views = inference_views(predictor.model_config.dims, data_cfg.slice_axis, tta, eval_cfg.planes)
    spread = None
    if len(views) == 1:
        mean = _assemble(t1, device, data_cfg.slice_axis, data_cfg, eval_cfg, progress)
    else:
        host_mean, spread = _view_passes(t1, views, device, data_cfg, eval_cfg, progress)
        spread[np.asarray(mask) <= 0] = 0.0
        mean = device.to_device(host_mean.astype(np.float32))
    lo, hi = t2_range
    out, clipped_fraction = device.clip_and_mask(mean, device.to_device(np.asarray(mask) > 0), lo, hi)
    return Synthesis(device.to_host(out), spread, float(device.to_host(clipped_fraction)), len(views))


def _view_passes(t1: np.ndarray, views: list[tuple[int, tuple[int, ...]]], device: Predictor,
                 data_cfg: DataConfig, eval_cfg: EvalConfig, progress: ProgressFn | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean (float64) and standard deviation (float32) of the syntheses of the views."""
    total = np.zeros(t1.shape, dtype=np.float64)
    total_sq = np.zeros(t1.shape, dtype=np.float64)
    for axis, flips in views:
        view = np.ascontiguousarray(np.flip(t1, axis=flips)) if flips else t1
        pred = device.to_host(_assemble(view, device, axis, data_cfg, eval_cfg, progress))
        pred = (np.flip(pred, axis=flips) if flips else pred).astype(np.float64)
        total += pred
        total_sq += pred**2
    mean = total / len(views)
    return mean, np.sqrt(np.maximum(total_sq / len(views) - mean**2, 0.0)).astype(np.float32)


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
    predictor: BatchPredictor,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Normalized RAS+ T1 (D, H, W) -> normalized T2 (D, H, W), float32.

    2D models see every slice along ``data_cfg.slice_axis`` (also empty ones, so the output
    covers the whole volume); 3D models see overlapping ``data_cfg.patch_size`` patches blended
    with ``eval_cfg.blend`` weights. Batches are always ``eval_cfg.inference_batch`` long (the
    last one padded, its extra outputs dropped): one compiled shape per volume.
    """
    device = volume_predictor(predictor)
    return device.to_host(_assemble(t1, device, data_cfg.slice_axis, data_cfg, eval_cfg, progress))


def _assemble(t1: np.ndarray, device: Predictor, axis: int, data_cfg: DataConfig, eval_cfg: EvalConfig,
              progress: ProgressFn | None) -> Any:
    """:func:`synthesize_volume`'s result (2D: slices along ``axis``), left on the predictor's device."""
    if t1.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {t1.shape}")
    t1 = np.asarray(t1, dtype=np.float32)
    dims = device.model_config.dims
    if dims == 2:
        return _synthesize_slices(t1, device, axis, eval_cfg.inference_batch, progress)
    if dims == 3:
        return _synthesize_patches(t1, device, tuple(data_cfg.patch_size), eval_cfg, progress)
    raise ValueError(f"model dims must be 2 or 3, got {dims}")


def volume_predictor(predictor: BatchPredictor) -> Predictor:
    """The predictor itself where it assembles volumes on its device, else its host adapter."""
    if isinstance(predictor, Predictor):
        return predictor
    from mrsynth.inference.host import HostPredictor

    return HostPredictor(predictor)


def full_batches(items: np.ndarray, batch: int) -> tuple[np.ndarray, list[int]]:
    """``items`` (N, ...) in batches of exactly ``batch``: (batches, batch, ...) int32 and the
    real count of each; the last batch is padded with copies of the last item."""
    batch = max(1, int(batch))
    n = len(items)
    padded = np.concatenate([items, np.repeat(items[-1:], -n % batch, axis=0)])
    counts = [min(batch, n - start) for start in range(0, n, batch)]
    return padded.reshape(len(counts), batch, *items.shape[1:]).astype(np.int32), counts


def slice_rows(count: int, context: int) -> np.ndarray:
    """(count, 2 * context + 1): every slice with its clamped neighbours, in order."""
    return np.stack([context_indices(i, context, count) for i in range(count)])


def _synthesize_slices(
    t1: np.ndarray, device: Predictor, axis: int, batch: int, progress: ProgressFn | None
) -> Any:
    n = t1.shape[axis]
    context = (device.model_config.in_channels - 1) // 2  # 2.5D: neighbours on each side
    batches, counts = full_batches(slice_rows(n, context), batch)
    volume = device.to_device(t1)
    out = device.zeros(t1.shape)
    done = 0
    for rows, count in zip(batches, counts):
        out = device.predict_slices(out, volume, rows, count, axis)
        done += count
        if progress is not None:
            progress(done, n)
    return out


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


def blend_profile(size: int, blend: str) -> np.ndarray:
    """One axis of the blending weights: nnU-Net's Gaussian (sigma = size/8, max 1, never 0:
    its ends are exp(-8) of the centre) or constant ones."""
    if blend == "constant":
        return np.ones(size, dtype=np.float64)
    centre = (size - 1) / 2.0
    profile = np.exp(-0.5 * ((np.arange(size) - centre) / (size / 8)) ** 2)
    return profile / profile.max()


@functools.lru_cache(maxsize=8)
def blend_weight(patch: tuple[int, ...], blend: str) -> np.ndarray:
    """The patch's blending weights, float32: the outer product of its axes' profiles (computed
    once per patch size and blend)."""
    weight = np.ones((), dtype=np.float64)
    for size in patch:
        weight = np.multiply.outer(weight, blend_profile(size, blend))
    weight = weight.astype(np.float32)
    weight.flags.writeable = False
    return weight


@dataclass(frozen=True)
class PatchPlan:
    """Where a (padded) volume's patches lie, in full batches, and how their outputs are blended.

    The patches form a grid (a product of per-axis starts) and the weights a product of
    per-axis profiles, so the summed weight at a voxel is the product of per-axis sums: its
    inverse is three short vectors (``factors``), not a volume.
    """

    batches: np.ndarray  # (batches, batch, 3) int32 patch starts
    counts: list[int]
    weight: np.ndarray  # the patch's float32 blending weights
    factors: tuple[np.ndarray, np.ndarray, np.ndarray]  # float32 1 / summed weight, per axis


def patch_plan(shape: Sequence[int], patch: Sequence[int], eval_cfg: EvalConfig) -> PatchPlan:
    """The plan of a volume of ``shape`` (at least ``patch`` on every axis)."""
    axis_starts = [patch_starts(n, p, eval_cfg.patch_overlap) for n, p in zip(shape, patch)]
    starts = np.array(list(itertools.product(*axis_starts)), dtype=np.int32)
    batches, counts = full_batches(starts, eval_cfg.inference_batch)
    factors = []
    for n, p, axis in zip(shape, patch, axis_starts):
        total = np.zeros(n, dtype=np.float64)
        profile = blend_profile(p, eval_cfg.blend)
        for s in axis:
            total[s : s + p] += profile
        factors.append((1.0 / total).astype(np.float32))
    return PatchPlan(batches, counts, blend_weight(tuple(patch), eval_cfg.blend), tuple(factors))


def _synthesize_patches(
    t1: np.ndarray,
    device: Predictor,
    patch: tuple[int, int, int],
    eval_cfg: EvalConfig,
    progress: ProgressFn | None,
) -> Any:
    if len(patch) != 3:
        raise ValueError(f"3D inference needs a 3-number patch size, got {patch}")
    padded, _ = pad_to_shape(t1, [max(n, p) for n, p in zip(t1.shape, patch)])
    plan = patch_plan(padded.shape, patch, eval_cfg)
    volume = device.to_device(padded)
    weight = device.to_device(plan.weight)
    accum = device.zeros(padded.shape)
    total, done = sum(plan.counts), 0
    for starts, count in zip(plan.batches, plan.counts):
        accum = device.predict_patches(accum, volume, starts, count, weight)
        done += count
        if progress is not None:
            progress(done, total)
    return device.normalize(accum, plan.factors, t1.shape)
