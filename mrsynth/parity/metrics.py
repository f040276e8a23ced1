"""How two backends' numbers are compared: relative L2 error and PSNR, in float64 on the host."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def rel_l2(value: np.ndarray, reference: np.ndarray) -> float:
    """||value - reference|| / ||reference|| (0 when both are zero; inf when only the reference is)."""
    a = np.asarray(value, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = float(np.linalg.norm((a - b).ravel()))
    norm = float(np.linalg.norm(b.ravel()))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / norm


def worst_rel_l2(values: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                 floor_fraction: float = 0.0) -> tuple[float, str]:
    """The largest per-tensor relative L2 error over matching names, and that tensor's name.

    Each tensor's denominator is ``max(||reference||, floor_fraction * ||all references||)``, so
    a tensor whose true value is zero (its computed value only rounding noise) is measured
    against the scale of the whole set instead of against noise.
    """
    if values.keys() != references.keys():
        only = sorted(set(values) ^ set(references))
        raise ValueError(f"tensor names differ (e.g. {only[0]!r})")
    total = math.sqrt(sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in references.values()))
    worst, worst_name = 0.0, ""
    for name in sorted(references):
        a = np.asarray(values[name], dtype=np.float64)
        b = np.asarray(references[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ: {a.shape} vs {b.shape}")
        diff = float(np.linalg.norm((a - b).ravel()))
        norm = max(float(np.linalg.norm(b.ravel())), floor_fraction * total)
        err = (0.0 if diff == 0.0 else math.inf) if norm == 0.0 else diff / norm
        if err > worst or not worst_name:
            worst, worst_name = err, name
    return worst, worst_name


def psnr(value: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``value`` against ``reference``, peak = the reference's value range."""
    a = np.asarray(value, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    peak = float(b.max() - b.min())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse) if peak > 0 else -math.inf
