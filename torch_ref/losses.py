"""Training losses of docs/ARCHITECTURE.md, registered by name (``train.loss``): L1, and
L1 + weight * (1 - SSIM), in float32.

The same contract as ``jax_impl/losses.py`` (``fn(pred, batch, train) -> (loss, terms)``), on
channels-first tensors: the engine transposes the batch (``t1``, ``t2``, and ``mask`` for a loss
marked with :func:`mrsynth.losses.uses_mask`) at its boundary. :func:`training_loss` calls a loss outside autocast with a float32 ``pred``, so a
registered loss never sees bfloat16.

SSIM uses a separable Gaussian window (size 7, sigma 1.5) in 'valid' mode, C1 = (0.01 R)^2,
C2 = (0.03 R)^2 with R = ``train.ssim_data_range``, (co)variances as E[xy] - E[x]E[y], and the
mean of the SSIM map over the valid region and the batch — the same numbers the JAX loss gives.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from mrsynth.config import TrainConfig
from mrsynth.losses import uses_mask
from mrsynth.registry import Registry

SSIM_WINDOW = 7
SSIM_SIGMA = 1.5

LossFn = Callable[[torch.Tensor, Mapping[str, torch.Tensor], TrainConfig],
                  tuple[torch.Tensor, dict[str, torch.Tensor]]]
LOSSES: Registry[LossFn] = Registry("train.loss", "loss", "torch backend")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """1D Gaussian weights summing to 1 (float32)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    weights = torch.exp(-(coords**2) / (2.0 * sigma * sigma))
    return (weights / weights.sum()).float()


def _blur_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter along every spatial axis, 'valid' region, per channel."""
    channels = x.shape[1]
    spatial = x.ndim - 2
    conv = F.conv2d if spatial == 2 else F.conv3d
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = window.numel()
        kernel = window.reshape(shape).expand(channels, *shape[1:])
        x = conv(x, kernel, groups=channels)
    return x


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM of channels-first (B, 1, *spatial) tensors, computed in float32."""
    pred, target = pred.float(), target.float()
    window = gaussian_window().to(pred.device)
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    mu_p, mu_t, e_pp, e_tt, e_pt = _blur_valid(stacked, window).chunk(5, dim=1)
    var_p = e_pp - mu_p * mu_p
    var_t = e_tt - mu_t * mu_t
    cov = e_pt - mu_p * mu_t
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    numerator = (2.0 * mu_p * mu_t + c1) * (2.0 * cov + c2)
    denominator = (mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2)
    return (numerator / denominator).mean()


def training_loss(pred: torch.Tensor, batch: Mapping[str, torch.Tensor], train: TrainConfig
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The configured loss of a channels-first batch and its logged terms, in float32."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return LOSSES.lookup(train.loss)(pred.float(), batch, train)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).abs().mean()


@LOSSES.register("l1")
def l1_loss(pred: torch.Tensor, batch: Mapping[str, torch.Tensor], train: TrainConfig
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean |pred - t2| over every voxel of the batch."""
    value = l1(pred, batch["t2"])
    return value, {"l1": value}


@LOSSES.register("l1_masked")
@uses_mask
def l1_masked_loss(pred: torch.Tensor, batch: Mapping[str, torch.Tensor], train: TrainConfig
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean |pred - t2| over the voxels inside the brain mask (see ``jax_impl/losses.py``)."""
    inside = batch["mask"].float()
    value = ((pred - batch["t2"].float()).abs() * inside).sum() / inside.sum().clamp_min(1.0)
    return value, {"l1": value}


@LOSSES.register("l1_ssim")
def l1_ssim_loss(pred: torch.Tensor, batch: Mapping[str, torch.Tensor], train: TrainConfig
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L1 + ``ssim_weight`` * (1 - SSIM); logs both L1 and the mean SSIM."""
    if min(pred.shape[2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs spatial sizes >= {SSIM_WINDOW}, got {tuple(pred.shape[2:])}")
    l1_value = l1(pred, batch["t2"])
    ssim_value = ssim(pred, batch["t2"], train.ssim_data_range)
    return l1_value + train.ssim_weight * (1.0 - ssim_value), {"l1": l1_value, "ssim": ssim_value}
