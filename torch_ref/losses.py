"""Training losses of docs/ARCHITECTURE.md: L1, and L1 + weight * (1 - SSIM), in float32.

SSIM uses a separable Gaussian window (size 7, sigma 1.5) in 'valid' mode, C1 = (0.01 R)^2,
C2 = (0.03 R)^2 with R = ``train.ssim_data_range``, (co)variances as E[xy] - E[x]E[y], and the
mean of the SSIM map over the valid region and the batch — the same numbers the JAX loss gives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mrsynth.config import TrainConfig

SSIM_WINDOW = 7
SSIM_SIGMA = 1.5


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


def training_loss(pred: torch.Tensor, target: torch.Tensor, train: TrainConfig) -> torch.Tensor:
    """The configured loss of a channels-first batch, always in float32 (outside autocast)."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        loss = (pred - target).abs().mean()
        if train.loss == "l1_ssim":
            if min(pred.shape[2:]) < SSIM_WINDOW:
                raise ValueError(f"SSIM needs spatial sizes >= {SSIM_WINDOW}, got {tuple(pred.shape[2:])}")
            loss = loss + train.ssim_weight * (1.0 - ssim(pred, target, train.ssim_data_range))
        return loss

