"""Training augmentation of 2D slices or 3D patches, driven by each sample's own Generators.

Spatial transforms (flips, small rotation and scaling about the centre) are drawn per sample
(:func:`draw_spatial`) and applied to the batch by :func:`warp_batch` (vectorized multilinear
warp, flips folded into it; flips alone are copies through flipped views), identically to T1, T2 and the mask (linear interpolation for intensities, nearest for
the mask) so the pair stays aligned; intensity transforms touch the input T1 only and only inside
the mask, because the target T2 must stay the truth and the background stays 0 as at
inference time. Besides gamma and Gaussian noise they mimic other scanners, so a model trained
on a few subjects meets their contrast and shading: a random contrast (deviations from the
in-mask mean scaled) and a smooth multiplicative bias field (coil shading).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from mrsynth.config import DataConfig


@dataclass(frozen=True)
class SpatialDraw:
    """One sample's spatial augmentation: which axes flip, and the rotation/scaling (output ->
    input coordinates about the centre; None when rotation and scaling are off)."""

    flips: np.ndarray  # (ndim,) bool
    matrix: np.ndarray | None

    @property
    def flip_axes(self) -> tuple[int, ...]:
        return tuple(int(a) for a in np.flatnonzero(self.flips))

    def warp_matrix(self) -> np.ndarray:
        """The flips folded into the matrix: flipping then warping about the centre is one warp
        by ``diag(+-1) @ matrix``."""
        signs = np.where(self.flips, -1.0, 1.0)
        return signs[:, None] * (self.matrix if self.matrix is not None else np.eye(len(self.flips)))


def draw_spatial(rng: np.random.Generator, ndim: int, cfg: DataConfig) -> SpatialDraw:
    """Flip each axis with ``flip_prob``; rotate by up to ``rotate_deg`` and scale by up to
    ``1 +- scale_range`` (every axis pair for 3D)."""
    flips = rng.random(ndim) < cfg.flip_prob
    matrix = None
    if cfg.rotate_deg > 0 or cfg.scale_range > 0:
        matrix = _rotation_scaling(ndim, rng, cfg.rotate_deg, cfg.scale_range)
    return SpatialDraw(flips, matrix)


WARP_CHUNK_VOXELS = 1 << 16  # one 256x256 slice: its temporaries fit in a core's cache


def warp_batch(padded: np.ndarray, matrices: np.ndarray, nearest: int = 0) -> np.ndarray:
    """Every sample of a batch warped about its centre, multilinear (the last ``nearest``
    channels: nearest voxel, for the mask), zero outside.

    ``padded`` is channel-major (K, B, *(size + 2)) with a zero border of one voxel (what lies
    outside the sample reads as 0); ``matrices`` (B, d, d) map output to input coordinates;
    returns (K, B, *size). The corner indices and weights are computed once for the batch and
    serve every channel (T1 context slices, T2, mask): per channel, 2^d contiguous gathers and
    multiply-adds (one gather for a nearest channel), no interpolation call per channel. Large
    batches go in chunks of about :data:`WARP_CHUNK_VOXELS` voxels: over whole batches the
    temporaries leave the CPU caches and the warp becomes memory-bound (measured 2-5x slower).
    """
    channels, batch, *padded_size = padded.shape
    size = np.asarray(padded_size) - 2
    per_chunk = max(1, WARP_CHUNK_VOXELS // int(np.prod(size)))
    if batch > per_chunk:
        return np.concatenate([warp_batch(padded[:, i:i + per_chunk], matrices[i:i + per_chunk], nearest)
                               for i in range(0, batch, per_chunk)], axis=1)
    ndim = len(size)
    centre = (size - 1) / 2.0
    open_grid = [(np.arange(n, dtype=np.float32) - np.float32(c)).reshape([n if a == axis else 1 for a in range(ndim)])
                 for axis, (n, c) in enumerate(zip(size, centre))]  # output coordinates about the centre
    per_sample = matrices.astype(np.float32).reshape(batch, ndim, ndim, *[1] * ndim)
    low_index, weights_high, nearest_index = [], [], []
    for out_axis in range(ndim):  # the input coordinate along out_axis, +1 for the border
        coord = np.float32(centre[out_axis] + 1.0) + sum(per_sample[:, out_axis, axis] * open_grid[axis]
                                                         for axis in range(ndim))
        coord = np.clip(coord, 0.0, size[out_axis] + 1.0)
        low = np.minimum(coord.astype(np.intp), size[out_axis])  # floor (coord >= 0); low + 1 stays inside
        low_index.append(low)
        weights_high.append(coord - low.astype(np.float32))
        if nearest:
            nearest_index.append(np.rint(coord).astype(np.intp))
    strides = [int(np.prod(np.asarray(padded_size)[axis + 1:])) for axis in range(ndim)]
    sample_start = (np.arange(batch, dtype=np.intp) * int(np.prod(padded_size))).reshape(batch, *[1] * ndim)
    base = sample_start + sum(low * stride for low, stride in zip(low_index, strides))
    weights = [(1.0 - high, high) for high in weights_high]
    corners = [(functools.reduce(np.multiply, [w[bit] for w, bit in zip(weights, corner)]),
                base + sum(bit * stride for bit, stride in zip(corner, strides)))
               for corner in itertools.product((0, 1), repeat=ndim)]
    out = np.empty((channels, batch, *size), np.float32)
    for channel, plane in zip(out[:channels - nearest], padded[:channels - nearest]):
        flat = plane.reshape(-1)
        for i, (weight, index) in enumerate(corners):
            term = weight * np.take(flat, index)
            if i == 0:
                channel[...] = term
            else:
                channel += term
    if nearest:
        index = sample_start + sum(near * stride for near, stride in zip(nearest_index, strides))
        for channel, plane in zip(out[channels - nearest:], padded[channels - nearest:]):
            channel[...] = np.take(plane.reshape(-1), index)
    return out


def intensity_augmented(cfg: DataConfig) -> bool:
    """Whether any intensity transform of the input T1 is on."""
    return max(cfg.contrast_range, cfg.gamma_range, cfg.bias_field, cfg.noise_std) > 0


def augment_intensity(t1: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """Contrast (factor in ``1 +- contrast_range``), gamma (exponent in ``1 +- gamma_range`` on the
    in-sample range), bias field (up to ``bias_field``) and noise (``noise_std``), in that order;
    a transform that is off draws nothing, so the others' draws do not move.

    ``t1`` is one image of ``mask``'s shape or, channels last, a stack of them (the 2.5D context
    slices): one scanner for every slice, so contrast, gamma and the bias field are drawn once and
    applied to each channel, each with its own in-mask statistics; the noise is the slices' own
    (thermal noise does not repeat from slice to slice, and a repeated pattern would be one a
    model could learn to subtract). One channel's noise is the first row of the same draw.
    """
    inside = mask > 0
    if not inside.any() or not intensity_augmented(cfg):
        return t1
    planes = t1[None] if t1.ndim == mask.ndim else np.moveaxis(t1, -1, 0)
    factor = rng.uniform(1.0 - cfg.contrast_range, 1.0 + cfg.contrast_range) if cfg.contrast_range > 0 else None
    gamma = max(0.05, rng.uniform(1.0 - cfg.gamma_range, 1.0 + cfg.gamma_range)) if cfg.gamma_range > 0 else None
    field = bias_field(mask.shape, rng, cfg.bias_field)[inside] if cfg.bias_field > 0 else None
    noise = (rng.normal(0.0, cfg.noise_std, size=(len(planes), int(inside.sum()))).astype(np.float32)
             if cfg.noise_std > 0 else [None] * len(planes))
    out = np.empty((len(planes), *mask.shape), np.float32)
    for plane, source, plane_noise in zip(out, planes, noise):
        values = source[inside].astype(np.float32)
        if factor is not None:
            mean = float(values.mean())
            values = (mean + factor * (values - mean)).astype(np.float32)
        if gamma is not None:
            low, high = float(values.min()), float(values.max())
            if high > low:
                values = (((values - low) / (high - low))**gamma * (high - low) + low).astype(np.float32)
        if field is not None:
            # MR signal is about 0 at the sample's darkest brain voxel; a normalized volume's own
            # zero is not (z-scores are centred), so the field multiplies the signal above that floor.
            low = float(values.min())
            values = (low + (values - low) * field).astype(np.float32)
        if plane_noise is not None:
            values += plane_noise
        plane[...] = source
        plane[inside] = values
    return out[0] if t1.ndim == mask.ndim else np.moveaxis(out, 0, -1)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float, degree: int = 3) -> np.ndarray:
    """A smooth multiplicative field ``exp(a p)`` in ``[exp(-strength), exp(strength)]``.

    ``p`` is a random polynomial of degree <= ``degree`` in the sample's coordinates (each axis
    scaled to [-1, 1]) without a constant term, scaled to max |p| = 1; ``a`` is drawn from
    [0, strength], so fields from none to the strongest occur. Each monomial is a broadcast
    product of per-axis powers (1D), never a stack of full-size coordinate grids.
    """
    powers_of = [[np.linspace(-1.0, 1.0, n).reshape([n if a == axis else 1 for a in range(len(shape))])**k
                  for k in range(degree + 1)] for axis, n in enumerate(shape)]
    powers = [p for p in itertools.product(range(degree + 1), repeat=len(shape)) if 0 < sum(p) <= degree]
    coefficients = rng.uniform(-1.0, 1.0, len(powers))
    poly = np.zeros(shape)
    for coefficient, power in zip(coefficients, powers):
        poly += coefficient * functools.reduce(np.multiply, [powers_of[axis][k] for axis, k in enumerate(power)])
    peak = float(np.abs(poly).max())
    unit = poly / peak if peak > 0 else poly
    return np.exp(rng.uniform(0.0, strength) * unit).astype(np.float32)


def _rotation_scaling(ndim: int, rng: np.random.Generator, rotate_deg: float, scale_range: float) -> np.ndarray:
    matrix = np.eye(ndim)
    planes = [(0, 1)] if ndim == 2 else [(0, 1), (0, 2), (1, 2)]
    for a, b in planes:
        angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg))
        rot = np.eye(ndim)
        rot[a, a] = rot[b, b] = np.cos(angle)
        rot[a, b], rot[b, a] = -np.sin(angle), np.sin(angle)
        matrix = rot @ matrix
    scale = rng.uniform(1.0 - scale_range, 1.0 + scale_range)
    return matrix / scale  # output -> input coordinates: dividing zooms in when scale > 1
