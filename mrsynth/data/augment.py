"""Training augmentation on one sample (2D slice or 3D patch), driven by a given Generator.

Spatial transforms (flips, small rotation and scaling about the centre) are applied
identically to T1, T2 and the mask (linear interpolation for intensities, nearest for the
mask) so the pair stays aligned; intensity transforms touch the input T1 only and only inside
the mask, because the target T2 must stay the truth and the background stays 0 as at
inference time. Besides gamma and Gaussian noise they mimic other scanners, so a model trained
on a few subjects meets their contrast and shading: a random contrast (deviations from the
in-mask mean scaled) and a smooth multiplicative bias field (coil shading).
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from mrsynth.config import DataConfig


def augment_spatial(sample: dict[str, np.ndarray], rng: np.random.Generator, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Flip each axis with ``flip_prob``; rotate by up to ``rotate_deg`` and scale by up to
    ``1 +- scale_range`` (every axis pair for 3D)."""
    ndim = sample["mask"].ndim
    flips = rng.random(ndim) < cfg.flip_prob
    out = {k: np.flip(v, axis=tuple(np.flatnonzero(flips))) if flips.any() else v for k, v in sample.items()}
    if cfg.rotate_deg > 0 or cfg.scale_range > 0:
        matrix = _rotation_scaling(ndim, rng, cfg.rotate_deg, cfg.scale_range)
        out = {k: _warp(v, matrix, order=0 if k == "mask" else 1) for k, v in out.items()}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def augment_intensity(t1: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """Contrast (factor in ``1 +- contrast_range``), gamma (exponent in ``1 +- gamma_range`` on the
    in-sample range), bias field (up to ``bias_field``) and noise (``noise_std``), in that order;
    a transform that is off draws nothing, so the others' draws do not move."""
    inside = mask > 0
    if not inside.any() or max(cfg.contrast_range, cfg.gamma_range, cfg.bias_field, cfg.noise_std) <= 0:
        return t1
    out = t1.astype(np.float32, copy=True)
    if cfg.contrast_range > 0:
        factor = rng.uniform(1.0 - cfg.contrast_range, 1.0 + cfg.contrast_range)
        mean = float(out[inside].mean())
        out[inside] = mean + factor * (out[inside] - mean)
    if cfg.gamma_range > 0:
        gamma = max(0.05, rng.uniform(1.0 - cfg.gamma_range, 1.0 + cfg.gamma_range))
        low, high = float(out[inside].min()), float(out[inside].max())
        if high > low:
            unit = (out[inside] - low) / (high - low)
            out[inside] = unit**gamma * (high - low) + low
    if cfg.bias_field > 0:
        # MR signal is about 0 at the sample's darkest brain voxel; a normalized volume's own zero
        # is not (z-scores are centred), so the field multiplies the signal above that floor.
        field = bias_field(out.shape, rng, cfg.bias_field)
        low = float(out[inside].min())
        out[inside] = low + (out[inside] - low) * field[inside]
    if cfg.noise_std > 0:
        out[inside] += rng.normal(0.0, cfg.noise_std, size=int(inside.sum())).astype(np.float32)
    return out


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float, degree: int = 3) -> np.ndarray:
    """A smooth multiplicative field ``exp(a p)`` in ``[exp(-strength), exp(strength)]``.

    ``p`` is a random polynomial of degree <= ``degree`` in the sample's coordinates (each axis
    scaled to [-1, 1]) without a constant term, scaled to max |p| = 1; ``a`` is drawn from
    [0, strength], so fields from none to the strongest occur.
    """
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    powers = [p for p in itertools.product(range(degree + 1), repeat=len(shape)) if 0 < sum(p) <= degree]
    coefficients = rng.uniform(-1.0, 1.0, len(powers))
    poly = np.zeros(shape)
    for coefficient, power in zip(coefficients, powers):
        poly += coefficient * np.prod([axis**k for axis, k in zip(axes, power)], axis=0)
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


def _warp(array: np.ndarray, matrix: np.ndarray, order: int) -> np.ndarray:
    centre = (np.asarray(array.shape) - 1) / 2.0
    offset = centre - matrix @ centre
    return ndimage.affine_transform(array, matrix, offset=offset, order=order, mode="constant", cval=0.0).astype(
        array.dtype, copy=False
    )
