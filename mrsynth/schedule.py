"""The learning-rate schedule both backends use: linear warmup, then cosine decay.

One formula, evaluated per optimizer update (``step`` = number of updates already applied,
0 for the first). ``xp`` is the array module (``math``-like numpy, or jax.numpy inside a jitted
optax schedule) so JAX and PyTorch compute the same number at every step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mrsynth.config import TrainConfig


def warmup_cosine(step: Any, peak_lr: float, warmup_steps: int, total_steps: int,
                  end_factor: float, xp: Any = np) -> Any:
    """lr(step): (step+1)/warmup * peak during warmup, then cosine from peak to peak*end_factor."""
    step = xp.asarray(step, dtype=xp.float32) if xp is not np else np.float64(step)
    warm = xp.minimum((step + 1.0) / max(warmup_steps, 1), 1.0)
    decay_len = max(total_steps - warmup_steps, 1)
    progress = xp.clip((step - warmup_steps) / decay_len, 0.0, 1.0)
    cosine = end_factor + (1.0 - end_factor) * 0.5 * (1.0 + xp.cos(np.pi * progress))
    factor = xp.where(step < warmup_steps, warm, cosine) if warmup_steps > 0 else cosine
    return peak_lr * factor


def lr_at(step: int, train: TrainConfig, peak_lr: float | None = None) -> float:
    """The learning rate of update ``step`` as a Python float (host side, logging, torch);
    ``peak_lr`` for another optimizer on the same schedule (the discriminator's), else ``train.lr``."""
    peak = train.lr if peak_lr is None else peak_lr
    return float(warmup_cosine(step, peak, train.warmup_steps, train.steps, train.end_lr_factor))
