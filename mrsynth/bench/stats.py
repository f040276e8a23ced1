"""Summary statistics of repeated timings (robust: medians and percentiles, not means)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """median / p10 / p90 / mean / min / max of per-step times in milliseconds, plus the count."""
    if len(seconds) == 0:
        raise ValueError("no timings to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "n": int(ms.size),
    }


def throughput(items_per_step: float, step_ms: float) -> float:
    """Items (images, voxels...) per second at a step time of ``step_ms`` milliseconds."""
    return items_per_step / (step_ms / 1e3)


def tflops(flops_per_step: float | None, step_ms: float) -> float | None:
    """Achieved TFLOP/s; None when the network's FLOPs are unknown (no architecture description)."""
    return None if flops_per_step is None else flops_per_step / (step_ms / 1e3) / 1e12
