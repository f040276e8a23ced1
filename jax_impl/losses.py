"""Training losses of docs/ARCHITECTURE.md: L1, and L1 + weight * (1 - SSIM).

SSIM uses a separable Gaussian window (size 7, sigma 1.5) applied with 'valid' extent along
every spatial axis, C1 = (0.01 R)^2, C2 = (0.03 R)^2, averaged over the valid region and the
batch. Inputs are channels-last (B, *spatial, C); everything is computed in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mrsynth.config import TrainConfig

SSIM_WINDOW = 7
SSIM_SIGMA = 1.5


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalized 1-D Gaussian taps (sum 1), float32."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(x**2) / (2.0 * sigma**2))
    return (taps / taps.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable 'valid' filtering along each spatial axis (1..ndim-2) by shifted sums."""
    k = len(taps)
    for axis in range(1, x.ndim - 1):
        n = x.shape[axis] - k + 1
        x = sum(float(t) * jax.lax.slice_in_dim(x, i, i + n, axis=axis) for i, t in enumerate(taps))
    return x


def ssim(pred: jax.Array, target: jax.Array, data_range: float) -> jax.Array:
    """Mean SSIM over the valid region and batch (scalar, float32)."""
    x = pred.astype(jnp.float32)
    y = target.astype(jnp.float32)
    taps = gaussian_window()
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x**2
    var_y = _filter_valid(y * y, taps) - mu_y**2
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return jnp.mean(num / den)


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def training_loss(pred: jax.Array, target: jax.Array, train: TrainConfig) -> jax.Array:
    """The configured loss (``train.loss``) of a batch, float32 scalar."""
    loss = l1(pred, target)
    if train.loss == "l1_ssim":
        loss = loss + train.ssim_weight * (1.0 - ssim(pred, target, train.ssim_data_range))
    return loss
