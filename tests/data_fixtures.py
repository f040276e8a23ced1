"""Tiny synthetic heads for the data tests (a plain module: test files import it by name)."""
from __future__ import annotations

import numpy as np

TINY_SHAPE = (24, 28, 20)


def synthetic_head(shape: tuple[int, int, int] = TINY_SHAPE, seed: int = 0) -> dict[str, np.ndarray]:
    """A small 'head': background 0, an ellipsoid of 'grey matter' (60) around 'white matter'
    (100), mild noise; T2 is an inverted contrast. Returns t1, t2 (float32) and the true mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(axis=0))
    mask = radius < 0.8
    t1 = np.where(radius < 0.5, 100.0, np.where(mask, 60.0, 0.0)) + rng.normal(0, 2.0, shape) * mask
    t2 = np.where(radius < 0.5, 40.0, np.where(mask, 80.0, 0.0)) + rng.normal(0, 2.0, shape) * mask
    return {"t1": t1.astype(np.float32), "t2": t2.astype(np.float32), "mask": mask.astype(np.uint8)}
