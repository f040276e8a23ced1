"""Eval-mode batch predictor: numpy channels-last T1 in, numpy channels-last T2 out.

Spatial sizes that are not a multiple of ``2**depth`` are zero-padded at the high end and the
output cropped back, so any volume or slice size works.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mrsynth.config import ModelConfig
from mrsynth.inference.volume import crop_to, pad_to_multiple
from torch_ref.precision import autocast, precision_scope


def channels_first_copy(array: np.ndarray) -> np.ndarray:
    """(B, *spatial, C) -> a fresh C-ordered float32 (B, C, *spatial) array.

    Always a new array with canonical strides: a one-channel axis keeps whatever stride numpy
    gave it in a view (np.ascontiguousarray returns such views as they are), and torch reads a
    stride of 1 there as channels_last and picks other conv kernels, whose float32 sums differ.
    """
    return np.array(np.moveaxis(array, -1, 1), dtype=np.float32, order="C", copy=True)


def to_channels_first(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, *spatial, C) numpy -> (B, C, *spatial) tensor on ``device`` (pinned, async copy on CUDA)."""
    tensor = torch.from_numpy(channels_first_copy(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def channels_last_format(dims: int) -> torch.memory_format:
    """The channels-last memory format of a ``dims``-D network's tensors (NHWC / NDHWC strides):
    the layout cuDNN's fastest bf16/TF32 convolution kernels read."""
    return torch.channels_last if dims == 2 else torch.channels_last_3d


def to_channels_last(tensor: torch.Tensor) -> np.ndarray:
    """(B, C, *spatial) tensor -> (B, *spatial, C) float32 numpy."""
    return tensor.permute(0, *range(2, tensor.ndim), 1).float().cpu().numpy()


class TorchPredictor:
    """Runs ``model`` in eval mode under ``torch.inference_mode`` (train mode is restored after), at
    the given named precision (``float32`` unless told: the arithmetic the parity checks verify)."""

    def __init__(self, model: nn.Module, model_config: ModelConfig, device: torch.device,
                 precision: str = "float32", channels_last: bool = False) -> None:
        self.model = model
        self.model_config = model_config
        self.device = device
        self.precision = precision
        self.channels_last = channels_last

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        dims = self.model_config.dims
        if batch.ndim != dims + 2 or batch.shape[-1] != self.model_config.in_channels:
            raise ValueError(
                f"expected a (B, {'H, W' if dims == 2 else 'D, H, W'}, {self.model_config.in_channels}) "
                f"batch, got shape {batch.shape}"
            )
        padded, crop = pad_to_multiple(np.asarray(batch, np.float32), 2**self.model_config.depth,
                                       axes=range(1, dims + 1))
        x = to_channels_first(padded, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=channels_last_format(dims))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), precision_scope(self.precision), \
                    autocast(self.precision, self.device.type):
                y = self.model(x)
        finally:
            self.model.train(was_training)
        out = to_channels_last(y)
        return crop_to(out, crop[:-1] + (slice(None),))
