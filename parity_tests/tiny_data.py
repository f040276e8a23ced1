"""Tiny phantom volumes for the parity suite (the built-in phantom generator at 32^3)."""
from __future__ import annotations

import numpy as np

from mrsynth.data.io import Geometry
from mrsynth.phantom.dataset import generate_subject
from mrsynth.data.preprocess import NormStats, Volume

TINY_VOLUME = (32, 32, 32)  # 6 mm voxels: a whole phantom head in 32^3


def _zscore(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, NormStats]:
    inside = x[mask > 0].astype(np.float64)
    stats = NormStats(float(inside.mean()), float(inside.std()))
    return stats.normalize(x), stats


def phantom_volume(seed: int, shape: tuple[int, int, int] = TINY_VOLUME) -> Volume:
    """One built-in phantom subject, z-scored in its mask, as an in-memory Volume."""
    subject = generate_subject(seed, shape, voxel_mm=6.0)
    t1, t1_stats = _zscore(subject.t1, subject.mask)
    t2, t2_stats = _zscore(subject.t2, subject.mask)
    return Volume(f"P{seed}", t1, t2, subject.mask, subject.labels, t1_stats, t2_stats,
                  Geometry(subject.affine, shape, b""))
