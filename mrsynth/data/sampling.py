"""What one epoch contains, and how to draw sample ``index`` of epoch ``epoch``.

2D (``model.dims == 2``): the epoch is every slice along ``data.slice_axis`` (along each of the
three axes with ``data.planes: all``) of every volume whose mask fraction is at least
``data.min_foreground``; a slice is cropped (random offset)
or zero-padded (centred) to ``data.patch_size``. 3D: the epoch is ``data.patches_per_volume``
patches per volume, each centred on a voxel drawn inside the volume's foreground bounding box
(zero padding where the patch leaves the volume). With ``data.context_slices = k`` a 2D sample's
T1 holds the slice and its k neighbours on each side as 2k + 1 channels (:func:`context_indices`).

A sample is a pure function of (arrays, seed, epoch, index): its random numbers come from
``np.random.SeedSequence([seed, epoch, index])`` and nothing else, so any worker, process or
backend produces the same sample. :func:`draw_batch` builds a whole batch in one buffer with
one vectorized warp; :func:`draw_sample` is one sample of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mrsynth.config import DataConfig
from mrsynth.data.augment import augment_intensity, draw_spatial, intensity_augmented, warp_batch
from mrsynth.errors import ConfigError, DataError


@dataclass(frozen=True)
class EpochIndex:
    """The samples of one epoch: row i = (volume, slice, axis) for 2D, (volume, -1, -1) for 3D."""

    rows: np.ndarray  # (n, 3) int64
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
        for axis, extent in enumerate(bounding_box(nonzero)):
            bboxes[v, :, axis] = extent.start, extent.stop - 1
        if dims == 2:
            for axis in training_axes(cfg):
                fraction = nonzero.mean(axis=tuple(a for a in range(3) if a != axis))
                keep = np.flatnonzero(fraction >= cfg.min_foreground)
                rows.append(np.stack([np.full(len(keep), v), keep, np.full(len(keep), axis)], axis=1))
        else:
            rows.append(np.tile([v, -1, -1], (cfg.patches_per_volume, 1)))
    table = np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)
    if len(table) == 0:
        raise DataError(
            f"no training samples: no slice has a foreground fraction >= data.min_foreground={cfg.min_foreground}"
        )
    return EpochIndex(rows=table, bboxes=bboxes)


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The smallest box holding ``mask``'s voxels, widened by ``margin`` and clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)


def training_axes(cfg: DataConfig) -> tuple[int, ...]:
    """The axes a 2D model's training slices run along (``data.planes``)."""
    return (0, 1, 2) if cfg.planes == "all" else (cfg.slice_axis,)


def context_indices(centre: int, context: int, count: int) -> np.ndarray:
    """Slice indices ``centre - context .. centre + context``, clamped to ``[0, count)``: at the
    volume's ends the edge slice repeats (training and inference alike)."""
    return np.clip(np.arange(centre - context, centre + context + 1), 0, count - 1)


def sample_rngs(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for location, spatial and intensity draws of one sample."""
    children = np.random.SeedSequence([seed, epoch, index]).spawn(3)
    return tuple(np.random.Generator(np.random.PCG64(c)) for c in children)


class SampleAt(NamedTuple):
    """Where sample ``index`` of ``epoch`` comes from: its volume's arrays, its epoch-index row
    and its volume's foreground bounding box."""

    arrays: dict[str, np.ndarray]
    row: np.ndarray
    bbox: np.ndarray
    epoch: int
    index: int


def draw_batch(samples: list[SampleAt], dims: int, cfg: DataConfig, *, seed: int, augment: bool = True
               ) -> dict[str, np.ndarray]:
    """The samples as one channels-last float32 batch: ``t1`` (B, *patch_size, 2k + 1), ``t2`` and
    ``mask`` (B, *patch_size, 1).

    Each sample is read straight into its slot of one channel-major buffer (T1 channels, T2,
    mask); flips alone are written through flipped views, rotation/scaling warps the buffer
    with :func:`mrsynth.data.augment.warp_batch` (nearest voxel for the mask).
    Sample ``i`` depends only on ``(seed, epoch_i, index_i)``, never on its batch neighbours.
    """
    size = tuple(cfg.patch_size)
    channels = 2 * cfg.context_slices + 1
    rngs = [sample_rngs(seed, s.epoch, s.index) for s in samples]
    draws = [draw_spatial(spatial_rng, len(size), cfg) for _, spatial_rng, _ in rngs] if augment else None
    warping = augment and (cfg.rotate_deg > 0 or cfg.scale_range > 0)
    border = 1 if warping else 0  # warp_batch reads a zero border around every sample
    buffer = np.zeros((channels + 2, len(samples), *(n + 2 * border for n in size)), np.float32)
    interior = tuple(slice(border, border + n) for n in size)
    for i, (sample, (location_rng, _, _)) in enumerate(zip(samples, rngs)):
        slot = buffer[(slice(None), i) + interior]
        if draws is not None and not warping:
            slot = np.flip(slot, tuple(a + 1 for a in draws[i].flip_axes))
        read_sample(sample, dims, cfg, location_rng, slot)
    if warping:
        assert draws is not None
        buffer = warp_batch(buffer, np.stack([d.warp_matrix() for d in draws]), nearest=1)
    channels_last = lambda planes: np.ascontiguousarray(np.moveaxis(planes, 0, -1))  # noqa: E731
    batch = {"t1": channels_last(buffer[:channels]), "t2": channels_last(buffer[channels:channels + 1]),
             "mask": channels_last(buffer[channels + 1:])}
    if augment and intensity_augmented(cfg):
        for i, (_, _, intensity_rng) in enumerate(rngs):  # one draw for all channels: one scanner
            batch["t1"][i] = augment_intensity(batch["t1"][i], batch["mask"][i, ..., 0], intensity_rng, cfg)
    return batch


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
    """Sample ``index`` of ``epoch`` alone, channels-last float32: ``t1`` (*patch_size, 2k + 1),
    ``t2`` and ``mask`` (*patch_size, 1); the same values it has in any batch."""
    batch = draw_batch([SampleAt(arrays, row, bbox, epoch, index)], dims, cfg, seed=seed, augment=augment)
    return {k: v[0] for k, v in batch.items()}


def read_sample(sample: SampleAt, dims: int, cfg: DataConfig, location_rng: np.random.Generator,
                out: np.ndarray) -> None:
    """Write the sample's T1 channels, T2 and mask into ``out`` (2k + 3, *patch_size), zeros
    already there: 2D slices cropped at a random offset (zero-padded centred where smaller),
    3D patches centred on a voxel drawn in the foreground bounding box."""
    arrays, size = sample.arrays, tuple(cfg.patch_size)
    if dims == 2:
        centre, axis = int(sample.row[1]), int(sample.row[2])
        count = arrays["t1"].shape[axis]
        planes = [_plane(arrays["t1"], int(i), axis) for i in context_indices(centre, cfg.context_slices, count)]
        planes += [_plane(arrays["t2"], centre, axis), _plane(arrays["mask"], centre, axis)]
        start = crop_start(planes[0].shape, size, location_rng)
    else:
        low, high = sample.bbox
        centre_voxel = np.array([location_rng.integers(lo, hi + 1) for lo, hi in zip(low, high)])
        start = centre_voxel - np.asarray(size) // 2
        planes = [arrays["t1"], arrays["t2"], arrays["mask"]]
    for plane, target in zip(planes, out):
        copy_window(plane, start, target)


def _plane(volume: np.ndarray, index: int, axis: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` as a view (one contiguous read in a slice-major cache)."""
    return volume[(slice(None),) * axis + (index,)]


def crop_start(shape: tuple[int, ...], size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Window start: one random offset per axis where larger, centred (negative) where smaller."""
    return np.asarray([int(rng.integers(0, n - p + 1)) if n > p else -((p - n) // 2) for n, p in zip(shape, size)])


def copy_window(array: np.ndarray, start: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = array[start : start + out.shape]`` where the window lies inside ``array``; the
    rest of ``out`` is left as it is (zeros)."""
    src, dst = [], []
    for s, p, n in zip(start, out.shape, array.shape):
        lo, hi = max(int(s), 0), min(int(s) + p, n)
        if hi <= lo:
            return
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = array[tuple(src)]
