"""Preprocessing of one subject: RAS+ arrays, T2 on the T1 grid, foreground mask, normalization.

Choices, identical for training and inference:
- Every array is RAS+ (see :mod:`mrsynth.data.io`); T2, a given mask and labels are resampled
  onto the T1 grid through the affines when their grid differs (linear for T2, nearest for
  masks/labels). T1 voxels outside the T2 field of view are removed from the mask.
- Mask (``data.mask``): ``given`` file, ``otsu`` (Otsu threshold of T1 + closing, hole filling,
  largest component), ``given_or_otsu`` (the file when there is one), ``nonzero`` (the non-zero
  voxels of an already skull-stripped T1, holes filled), ``none`` (all ones). ``predict`` may
  instead hand in a mask function (brain extraction).
- Normalization (``data.normalization``, :mod:`mrsynth.data.normalization`) uses statistics
  from the voxels inside the mask; ``nyul``'s standard scale is learned on the training subjects
  when a run starts (:func:`fit_training_normalization`) and travels in the config from then on.
- Outside the mask both normalized volumes are set to 0: the background carries no anatomy,
  zero is what the network's zero padding assumes, and the predicted T2 is written with a
  clean background. (With ``data.mask: none`` nothing is zeroed.)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mrsynth.config import DataConfig
from mrsynth.data import cache
from mrsynth.data.discovery import SubjectFiles
from mrsynth.data.io import Geometry, read_nifti
from mrsynth.data.normalization import NormStats, normalize_subject, nyul_volume_scale
from mrsynth.errors import DataError


@dataclass
class Volume:
    """One preprocessed subject: RAS+ arrays on the T1 grid (memory-mapped when cached: then
    views whose memory is slice-axis-first, see :mod:`mrsynth.data.cache`)."""

    subject: str
    t1: np.ndarray
    t2: np.ndarray | None
    mask: np.ndarray
    labels: np.ndarray | None
    t1_stats: NormStats
    t2_stats: NormStats | None
    geometry: Geometry


def load_volume(files: SubjectFiles, cfg: DataConfig) -> Volume:
    """Preprocessed volume of a subject, from the cache (``data.cache_dir``; "" disables it)."""
    if not cfg.cache_dir:
        return preprocess(files, cfg)
    roles = {"t1": files.t1, "t2": files.t2, "mask": files.mask, "labels": files.labels}
    for role, path in roles.items():
        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: {role} file not found")
    # The stored layout follows data.slice_axis (training reads whole slices along it).
    key = cache.cache_key(roles, {**preprocessing_settings(cfg), "stored_slice_axis": cfg.slice_axis})
    where = cache.entry_dir(Path(cfg.cache_dir), files.subject, key)
    entry = cache.read_entry(where)
    if entry is None:
        volume = preprocess(files, cfg)
        cache.write_entry(where, _arrays_of(volume), _meta_of(volume, key), cfg.slice_axis)
        entry = cache.read_entry(where)
        if entry is None:
            raise DataError(f"{where}: cache entry could not be read back")
    return _volume_from_entry(*entry)


# A brain-mask function: RAS+ T1 (raw units) and its geometry -> boolean mask.
MaskFn = Callable[[np.ndarray, Geometry], np.ndarray]


def load_t1_only(path: Path, cfg: DataConfig, mask: Path | None = None, mask_fn: MaskFn | None = None) -> Volume:
    """Preprocessed T1-only volume (``t2`` None), e.g. a customer scan for ``predict``.

    Not cached: a customer's scan is read once, and the cache would keep a copy of it.
    """
    path = Path(path)
    subject = path.name.removesuffix(".gz").removesuffix(".nii")
    return preprocess(SubjectFiles(subject=subject, t1=path, t2=None, mask=mask), cfg, mask_fn)


def preprocessing_settings(cfg: DataConfig) -> dict[str, Any]:
    """The settings that change a preprocessed volume (part of the cache key)."""
    settings: dict[str, Any] = {"mask": cfg.mask, "normalization": cfg.normalization,
                                "percentiles": list(cfg.percentiles)}
    if cfg.normalization == "nyul":
        settings["nyul_landmarks"] = [list(cfg.nyul_t1_landmarks), list(cfg.nyul_t2_landmarks)]
    return settings


def fit_training_normalization(cfg: DataConfig, train: list[SubjectFiles]) -> DataConfig:
    """``cfg`` with what its normalization learns from the training subjects: nyul's standard
    scales (unless the config gives them), the mean of each subject's own scale."""
    if cfg.normalization != "nyul" or cfg.nyul_t1_landmarks:
        return cfg
    scales: dict[str, list[np.ndarray]] = {"t1": [], "t2": []}
    for files in train:
        subject = read_subject(files, cfg)
        for contrast, image, path in (("t1", subject.t1, files.t1), ("t2", subject.t2, files.t2)):
            if image is not None:
                scales[contrast].append(nyul_volume_scale(image[subject.mask], cfg.percentiles, path))
    if not scales["t2"]:
        raise DataError("data.normalization=nyul: no training subject has a T2 to learn its standard scale from")
    t1_scale, t2_scale = (tuple(float(v) for v in np.mean(scales[c], axis=0)) for c in ("t1", "t2"))
    return dataclasses.replace(cfg, nyul_t1_landmarks=t1_scale, nyul_t2_landmarks=t2_scale)


@dataclass
class RawSubject:
    """One subject before normalization: RAS+ raw intensities on the T1 grid and the final mask."""

    t1: np.ndarray
    t2: np.ndarray | None
    mask: np.ndarray  # bool
    labels: np.ndarray | None
    geometry: Geometry


def read_subject(files: SubjectFiles, cfg: DataConfig, mask_fn: MaskFn | None = None) -> RawSubject:
    """Read, reorient, align and mask one subject (``mask_fn`` replaces the ``data.mask`` policy)."""
    t1_raw, geometry = read_nifti(files.t1, what="T1")
    _check_not_constant(t1_raw, files.t1)
    coverage = np.ones(t1_raw.shape, dtype=bool)
    t2_raw = None
    if files.t2 is not None:
        t2_src, t2_geometry = read_nifti(files.t2, what="T2")
        _check_not_constant(t2_src, files.t2)
        t2_raw = resample_to(t2_src, t2_geometry, geometry, order=1)
        coverage = resample_to(np.ones(t2_src.shape, np.float32), t2_geometry, geometry, order=0) > 0.5
    foreground = mask_fn(t1_raw, geometry) if mask_fn is not None else _foreground(files, cfg, t1_raw, geometry)
    mask = np.asarray(foreground, dtype=bool) & coverage
    if not mask.any():
        raise DataError(f"{files.t1}: the foreground mask is empty")
    labels = None
    if files.labels is not None:
        labels_src, labels_geometry = read_nifti(files.labels, what="labels")
        labels = np.rint(resample_to(labels_src, labels_geometry, geometry, order=0)).astype(np.int16)
    return RawSubject(t1=t1_raw, t2=t2_raw, mask=mask, labels=labels, geometry=geometry)


def preprocess(files: SubjectFiles, cfg: DataConfig, mask_fn: MaskFn | None = None) -> Volume:
    """Read, reorient, align, mask and normalize one subject (no cache).

    ``mask_fn`` replaces the ``data.mask`` policy (``predict --skull-strip``).
    """
    raw = read_subject(files, cfg, mask_fn)
    t1, t2 = normalize_subject(raw.t1, raw.t2, raw.mask, cfg, files.t1, files.t2)
    if cfg.mask != "none":
        t1.values[~raw.mask] = 0.0
        if t2 is not None:
            t2.values[~raw.mask] = 0.0
    return Volume(
        subject=files.subject,
        t1=t1.values,
        t2=t2.values if t2 is not None else None,
        mask=raw.mask.astype(np.uint8),
        labels=raw.labels,
        t1_stats=t1.stats,
        t2_stats=t2.stats if t2 is not None else None,
        geometry=raw.geometry,
    )


# ---------------------------------------------------------------- alignment


def resample_to(moving: np.ndarray, moving_geometry: Geometry, fixed: Geometry, order: int) -> np.ndarray:
    """A RAS+ array on ``moving_geometry`` resampled onto the RAS+ grid of ``fixed``.

    Grids that already agree (shape, and affine within 1e-4 mm) are returned unchanged; grids
    whose fields of view do not overlap raise DataError.
    """
    fixed_affine, moving_affine = fixed.ras_affine, moving_geometry.ras_affine
    if moving.shape == fixed.ras_shape and np.allclose(fixed_affine, moving_affine, atol=1e-4):
        return moving.astype(np.float32, copy=False)
    fixed_to_moving = np.linalg.solve(moving_affine, fixed_affine)  # fixed voxel -> moving voxel
    if _overlap_fraction(fixed_to_moving, fixed.ras_shape, moving.shape) == 0.0:
        raise DataError(
            f"{moving_geometry.source}: field of view does not overlap {fixed.source or 'the T1'} "
            "(the grids cannot be aligned through their affines)"
        )
    return ndimage.affine_transform(
        moving.astype(np.float32, copy=False),
        fixed_to_moving[:3, :3],
        offset=fixed_to_moving[:3, 3],
        output_shape=fixed.ras_shape,
        order=order,
        mode="constant",
        cval=0.0,
    ).astype(np.float32, copy=False)


def _overlap_fraction(fixed_to_moving: np.ndarray, fixed_shape: tuple[int, ...], moving_shape: tuple[int, ...]) -> float:
    """Fraction of (a coarse lattice of) fixed voxels that land inside the moving grid."""
    axes = [np.linspace(0, n - 1, min(n, 16)) for n in fixed_shape]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    mapped = points @ fixed_to_moving[:3, :3].T + fixed_to_moving[:3, 3]
    inside = np.all((mapped >= -0.5) & (mapped <= np.asarray(moving_shape) - 0.5), axis=1)
    return float(inside.mean())


# ---------------------------------------------------------------- masks


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) from a numpy histogram."""
    values = np.asarray(values, dtype=np.float64).ravel()
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def otsu_foreground(t1: np.ndarray) -> np.ndarray:
    """Head/brain foreground: Otsu threshold, closing, hole filling, largest component."""
    mask = t1 > otsu_threshold(t1)
    structure = ndimage.generate_binary_structure(3, 1)
    mask = ndimage.binary_closing(mask, structure=structure, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask, structure=structure)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return mask


def _foreground(files: SubjectFiles, cfg: DataConfig, t1: np.ndarray, geometry: Geometry) -> np.ndarray:
    if cfg.mask == "none":
        return np.ones(t1.shape, dtype=bool)
    if files.mask is not None and cfg.mask in ("given", "given_or_otsu"):
        mask_src, mask_geometry = read_nifti(files.mask, what="mask")
        return resample_to(mask_src, mask_geometry, geometry, order=0) > 0.5
    if cfg.mask == "given":
        raise DataError(f"{files.t1}: data.mask is 'given' but subject {files.subject} has no mask file")
    if cfg.mask == "nonzero":
        return nonzero_foreground(t1)
    return otsu_foreground(t1)


def nonzero_foreground(t1: np.ndarray) -> np.ndarray:
    """The brain of an already skull-stripped T1: its non-zero voxels, enclosed holes filled."""
    return ndimage.binary_fill_holes(t1 != 0)


def _check_not_constant(x: np.ndarray, path: Path) -> None:
    if x.size and float(x.max()) == float(x.min()):
        raise DataError(f"{path}: constant volume (every voxel is {float(x.min()):g})")


# ---------------------------------------------------------------- cache entries


def _arrays_of(volume: Volume) -> dict[str, np.ndarray]:
    arrays = {"t1": volume.t1, "mask": volume.mask}
    if volume.t2 is not None:
        arrays["t2"] = volume.t2
    if volume.labels is not None:
        arrays["labels"] = volume.labels
    return arrays


def _meta_of(volume: Volume, key: str) -> dict[str, Any]:
    return {
        "subject": volume.subject,
        "key": key,
        "t1_stats": volume.t1_stats.to_json(),
        "t2_stats": volume.t2_stats.to_json() if volume.t2_stats else None,
        "geometry": volume.geometry.to_json(),
    }


def _volume_from_entry(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Volume:
    return Volume(
        subject=meta["subject"],
        t1=arrays["t1"],
        t2=arrays.get("t2"),
        mask=arrays["mask"],
        labels=arrays.get("labels"),
        t1_stats=NormStats.from_json(meta["t1_stats"]),
        t2_stats=NormStats.from_json(meta["t2_stats"]) if meta.get("t2_stats") else None,
        geometry=Geometry.from_json(meta["geometry"]),
    )
