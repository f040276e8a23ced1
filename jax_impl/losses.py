"""Training losses of docs/ARCHITECTURE.md, registered by name (``train.loss``): L1, and
L1 + weight * (1 - SSIM).

A loss is ``fn(pred, batch, train) -> (loss, terms)``: ``pred`` the model's float32 output,
``batch`` the step's batch (``t1``, ``t2``, and ``mask`` when the loss is marked with
:func:`mrsynth.losses.uses_mask`: channels-last, as the loader gives it), ``train`` the
TrainConfig; it returns the scalar float32 loss and a dict of named float32 scalars that the
training loop logs (``{"l1": ..., "ssim": ...}``). Code outside the library adds one with
``@LOSSES.register("name")``; ``torch_ref/losses.py`` must register the same function.

SSIM uses a separable Gaussian window (size 7, sigma 1.5) applied with 'valid' extent along
every spatial axis, C1 = (0.01 R)^2, C2 = (0.03 R)^2, averaged over the valid region and the
batch. Inputs are channels-last (B, *spatial, C); everything is computed in float32.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mrsynth.config import TrainConfig
from mrsynth.losses import uses_mask
from mrsynth.registry import Registry

SSIM_WINDOW = 7
SSIM_SIGMA = 1.5

LossFn = Callable[[jax.Array, Mapping[str, jax.Array], TrainConfig], tuple[jax.Array, dict[str, jax.Array]]]
LOSSES: Registry[LossFn] = Registry("train.loss", "loss", "jax backend")


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


def training_loss(pred: jax.Array, batch: Mapping[str, jax.Array], train: TrainConfig
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The configured loss (``train.loss``) of a batch and its logged terms, in float32."""
    return LOSSES.lookup(train.loss)(pred.astype(jnp.float32), batch, train)


@LOSSES.register("l1")
def l1_loss(pred: jax.Array, batch: Mapping[str, jax.Array], train: TrainConfig
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean |pred - t2| over every voxel of the batch."""
    value = l1(pred, batch["t2"])
    return value, {"l1": value}


@LOSSES.register("l1_masked")
@uses_mask
def l1_masked_loss(pred: jax.Array, batch: Mapping[str, jax.Array], train: TrainConfig
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean |pred - t2| over the voxels inside the brain mask: the background, a large constant
    part of every crop, neither dilutes the loss nor ties the network's output near the
    background's input value (which an offset-0 normalization puts next to dark CSF)."""
    inside = batch["mask"].astype(jnp.float32)
    value = jnp.sum(jnp.abs(pred - batch["t2"].astype(jnp.float32)) * inside) / jnp.maximum(jnp.sum(inside), 1.0)
    return value, {"l1": value}


@LOSSES.register("l1_ssim")
def l1_ssim_loss(pred: jax.Array, batch: Mapping[str, jax.Array], train: TrainConfig
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L1 + ``ssim_weight`` * (1 - SSIM); logs both L1 and the mean SSIM."""
    l1_value = l1(pred, batch["t2"])
    ssim_value = ssim(pred, batch["t2"], train.ssim_data_range)
    return l1_value + train.ssim_weight * (1.0 - ssim_value), {"l1": l1_value, "ssim": ssim_value}
