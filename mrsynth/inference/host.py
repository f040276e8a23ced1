"""The device verbs of :class:`mrsynth.backend.Predictor` on the host, in numpy float32.

For batch predictors with no device of their own (an ONNX session, a test's stand-in): they
take the same plan and the same full-size batches as the backends' predictors, so a volume is
assembled the same way whoever computes it.
"""
from __future__ import annotations

import numpy as np

from mrsynth.backend import BatchPredictor


class HostPredictor:
    """A :class:`~mrsynth.backend.Predictor` whose "device" is host memory, around ``predictor``."""

    def __init__(self, predictor: BatchPredictor) -> None:
        self.predictor = predictor
        self.model_config = predictor.model_config

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor(batch)

    def to_device(self, array: np.ndarray) -> np.ndarray:
        return array if array.dtype == np.bool_ else np.asarray(array, dtype=np.float32)

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float32)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def predict_slices(self, out: np.ndarray, volume: np.ndarray, rows: np.ndarray, count: int,
                       axis: int) -> np.ndarray:
        slices = np.moveaxis(volume, axis, 0)  # (N, S1, S2)
        batch = np.ascontiguousarray(np.moveaxis(slices[rows], 1, -1))  # (B, S1, S2, C)
        pred = self._predict(batch, batch.shape[:-1] + (1,))
        np.moveaxis(out, axis, 0)[rows[:count, rows.shape[1] // 2]] = pred[:count, ..., 0]
        return out

    def predict_patches(self, accum: np.ndarray, volume: np.ndarray, starts: np.ndarray, count: int,
                        weight: np.ndarray) -> np.ndarray:
        windows = [tuple(slice(s, s + p) for s, p in zip(start, weight.shape)) for start in starts]
        batch = np.stack([volume[w] for w in windows])[..., None]
        pred = self._predict(batch, batch.shape)
        for window, patch_pred in zip(windows[:count], pred[:count, ..., 0]):
            accum[window] += patch_pred * weight
        return accum

    def normalize(self, accum: np.ndarray, factors: tuple[np.ndarray, np.ndarray, np.ndarray],
                  shape: tuple[int, int, int]) -> np.ndarray:
        fz, fy, fx = factors
        out = accum * (fz[:, None, None] * fy[None, :, None] * fx[None, None, :])
        return out[: shape[0], : shape[1], : shape[2]]

    def clip_and_mask(self, volume: np.ndarray, mask: np.ndarray, lo: float, hi: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        inside = mask > 0
        clipped = np.count_nonzero(((volume < lo) | (volume > hi)) & inside)
        fraction = np.float32(clipped / max(1, np.count_nonzero(inside)))
        return np.where(inside, np.clip(volume, lo, hi), np.float32(0)), fraction

    def _predict(self, batch: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
        pred = np.asarray(self.predictor(batch), dtype=np.float32)
        if pred.shape != expected:
            raise ValueError(f"predictor returned shape {pred.shape} for input {batch.shape}")
        return pred
