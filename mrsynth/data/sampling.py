"""What one epoch contains, and how to draw sample ``index`` of epoch ``epoch``.

2D (``model.dims == 2``): the epoch is every slice along ``data.slice_axis`` of every volume
whose mask fraction is at least ``data.min_foreground``; a slice is cropped (random offset)
or zero-padded (centred) to ``data.patch_size``. 3D: the epoch is ``data.patches_per_volume``
patches per volume, each centred on a voxel drawn inside the volume's foreground bounding box
(zero padding where the patch leaves the volume). With ``data.context_slices = k`` a 2D sample's
T1 holds the slice and its k neighbours on each side as 2k + 1 channels (:func:`context_indices`).

:func:`draw_sample` is a pure function of (arrays, seed, epoch, index): its random numbers
come from ``np.random.SeedSequence([seed, epoch, index])`` and nothing else, so any worker,
process or backend produces the same sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import copy

import numpy as np

from mrsynth.config import DataConfig
from mrsynth.data.augment import augment_intensity, augment_spatial
from mrsynth.errors import ConfigError, DataError


@dataclass(frozen=True)
class EpochIndex:
    """The samples of one epoch: row i = (volume, slice) for 2D, (volume, -1) for 3D."""

    rows: np.ndarray  # (n, 2) int64
    bboxes: np.ndarray  # (volumes, 2, 3) int64: foreground bounding box [low, high] (inclusive)

    def __len__(self) -> int:
        return len(self.rows)


def build_epoch_index(masks: list[np.ndarray], dims: int, cfg: DataConfig, names: list[str] | None = None) -> EpochIndex:
    """Index of the samples of an epoch over volumes with the given (RAS+) masks."""
    if dims == 3 and cfg.patches_per_volume < 1:
        raise ConfigError(f"data.patches_per_volume: must be >= 1, got {cfg.patches_per_volume}")
    rows: list[np.ndarray] = []
    bboxes = np.zeros((len(masks), 2, 3), dtype=np.int64)
    for v, mask in enumerate(masks):
        nonzero = np.asarray(mask) > 0
        if not nonzero.any():
            raise DataError(f"{names[v] if names else f'volume {v}'}: empty foreground mask, nothing to sample")
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            present = np.flatnonzero(nonzero.any(axis=other))
            bboxes[v, :, axis] = present[0], present[-1]
        if dims == 2:
            other = tuple(a for a in range(3) if a != cfg.slice_axis)
            fraction = nonzero.mean(axis=other)
            keep = np.flatnonzero(fraction >= cfg.min_foreground)
            rows.append(np.stack([np.full(len(keep), v), keep], axis=1))
        else:
            rows.append(np.stack([np.full(cfg.patches_per_volume, v), np.full(cfg.patches_per_volume, -1)], axis=1))
    table = np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)
    if len(table) == 0:
        raise DataError(
            f"no training samples: no slice has a foreground fraction >= data.min_foreground={cfg.min_foreground}"
        )
    return EpochIndex(rows=table, bboxes=bboxes)


def context_indices(centre: int, context: int, count: int) -> np.ndarray:
    """Slice indices ``centre - context .. centre + context``, clamped to ``[0, count)``: at the
    volume's ends the edge slice repeats (training and inference alike)."""
    return np.clip(np.arange(centre - context, centre + context + 1), 0, count - 1)


def sample_rngs(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for location, spatial and intensity draws of one sample."""
    children = np.random.SeedSequence([seed, epoch, index]).spawn(3)
    return tuple(np.random.Generator(np.random.PCG64(c)) for c in children)


def draw_sample(
    arrays: dict[str, np.ndarray],
    row: np.ndarray,
    bbox: np.ndarray,
    dims: int,
    cfg: DataConfig,
    *,
    seed: int,
    epoch: int,
    index: int,
    augment: bool = True,
) -> dict[str, np.ndarray]:
    """Sample ``index`` of ``epoch``, channels-last float32: ``t1`` (*patch_size, 2k + 1),
    ``t2`` and ``mask`` (*patch_size, 1)."""
    location_rng, spatial_rng, intensity_rng = sample_rngs(seed, epoch, index)
    channels = 2 * cfg.context_slices + 1
    if dims == 2:
        centre, axis = int(row[1]), cfg.slice_axis
        sample = {k: np.take(arrays[k], centre, axis=axis) for k in ("t2", "mask")}
        for c, i in enumerate(context_indices(centre, cfg.context_slices, arrays["t1"].shape[axis])):
            sample[f"t1.{c}"] = np.take(arrays["t1"], int(i), axis=axis)
        sample = crop_or_pad(sample, tuple(cfg.patch_size), location_rng)
    else:
        low, high = bbox
        centre_voxel = np.array([location_rng.integers(lo, hi + 1) for lo, hi in zip(low, high)])
        start = centre_voxel - np.asarray(cfg.patch_size) // 2
        sample = {k: extract_patch(a, start, tuple(cfg.patch_size)) for k, a in arrays.items()}
        sample["t1.0"] = sample.pop("t1")
    sample = {k: np.asarray(v, dtype=np.float32) for k, v in sample.items()}
    if augment:
        sample = augment_spatial(sample, spatial_rng, cfg)
        for c in range(channels):  # one draw for all channels: the same scanner for every slice
            sample[f"t1.{c}"] = augment_intensity(sample[f"t1.{c}"], sample["mask"], copy.deepcopy(intensity_rng), cfg)
    t1 = np.stack([sample.pop(f"t1.{c}") for c in range(channels)], axis=-1)
    return {"t1": t1, **{k: v[..., None] for k, v in sample.items()}}


def crop_or_pad(sample: dict[str, np.ndarray], size: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Crop at one random offset per axis where larger, zero-pad centred where smaller."""
    shape = next(iter(sample.values())).shape
    start = []
    for n, p in zip(shape, size):
        start.append(int(rng.integers(0, n - p + 1)) if n > p else -((p - n) // 2))
    return {k: extract_patch(v, np.asarray(start), size) for k, v in sample.items()}


def extract_patch(array: np.ndarray, start: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``array[start : start + size]`` with zeros where the window leaves the array."""
    out = np.zeros(size, dtype=np.float32)
    src, dst = [], []
    for s, p, n in zip(start, size, array.shape):
        lo, hi = max(int(s), 0), min(int(s) + p, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = array[tuple(src)]
    return out
