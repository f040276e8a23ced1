"""Eval-mode predictor: numpy channels-last T1 in, numpy channels-last T2 out; and whole volumes on its device.

Spatial sizes that are not a multiple of ``2**depth`` are zero-padded at the high end and the
output cropped back, so any volume or slice size works.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
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
    the given named precision (``float32`` unless told: the arithmetic the parity checks verify; a
    predictor loaded from a run or weight file gets the run's ``train.precision``). Also the
    device verbs of whole-volume synthesis (:class:`mrsynth.backend.Predictor`): tensors on
    ``device``, batches always full-size (one cuDNN autotuning per volume)."""

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
        out = to_channels_last(self._network(to_channels_first(padded, self.device)))
        return crop_to(out, crop[:-1] + (slice(None),))

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a channels-first batch whose spatial sizes are multiples of ``2**depth``;
        float32 out."""
        if self.channels_last:
            x = x.contiguous(memory_format=channels_last_format(x.dim() - 2))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), precision_scope(self.precision), \
                    autocast(self.precision, self.device.type):
                return self.model(x).float()
        finally:
            self.model.train(was_training)

    def _padded_network(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_network` on any spatial size: zero-padded at the high end, cropped back."""
        spatial = x.shape[2:]
        multiple = 2**self.model_config.depth
        widths = [w for n in reversed(spatial) for w in (0, -n % multiple)]
        y = self._network(F.pad(x, widths) if any(widths) else x)
        return y[(slice(None), slice(None), *(slice(0, n) for n in spatial))]

    # --- device verbs of whole-volume synthesis (mrsynth.backend.Predictor) ---
    def to_device(self, array: np.ndarray) -> torch.Tensor:
        dtype = np.bool_ if array.dtype == np.bool_ else np.float32
        return torch.from_numpy(np.require(array, dtype, "W")).to(self.device)  # torch wants writable

    def to_host(self, array: torch.Tensor) -> np.ndarray:
        return array.float().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def predict_slices(self, out: torch.Tensor, volume: torch.Tensor, rows: np.ndarray, count: int,
                       axis: int) -> torch.Tensor:
        index = torch.from_numpy(rows).to(self.device, torch.long)
        batch = torch.movedim(volume, axis, 0)[index]  # (B, C, S1, S2): channels-first already
        pred = self._padded_network(batch)
        torch.movedim(out, axis, 0)[index[:count, index.shape[1] // 2]] = pred[:count, 0]
        return out

    def predict_patches(self, accum: torch.Tensor, volume: torch.Tensor, starts: np.ndarray, count: int,
                        weight: torch.Tensor) -> torch.Tensor:
        windows = [tuple(slice(s, s + p) for s, p in zip(start.tolist(), weight.shape)) for start in starts]
        batch = torch.stack([volume[w] for w in windows]).unsqueeze(1)
        pred = self._padded_network(batch)[:, 0] * weight
        for window, patch_pred in zip(windows[:count], pred[:count]):
            accum[window] += patch_pred
        return accum

    def normalize(self, accum: torch.Tensor, factors: tuple[np.ndarray, np.ndarray, np.ndarray],
                  shape: tuple[int, int, int]) -> torch.Tensor:
        fz, fy, fx = (torch.from_numpy(f).to(self.device) for f in factors)
        out = accum * (fz[:, None, None] * fy[None, :, None] * fx[None, None, :])
        return out[: shape[0], : shape[1], : shape[2]]

    def clip_and_mask(self, volume: torch.Tensor, mask: torch.Tensor, lo: float, hi: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        inside = mask > 0
        clipped = torch.count_nonzero(((volume < lo) | (volume > hi)) & inside)  # not bool .sum(): 20x slower on a CPU
        fraction = clipped.float() / torch.count_nonzero(inside).clamp(min=1).float()
        return torch.where(inside, volume.clamp(lo, hi), 0.0), fraction
