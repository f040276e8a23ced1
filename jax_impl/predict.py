"""Eval-mode batch predictor: numpy (B, *spatial, 1) in, numpy out, any spatial size.

Dropout off, BatchNorm on running statistics, matmuls at the given named precision
(``float32`` unless told: full float32, the arithmetic the parity checks verify). Inputs are
zero-padded (background is 0 after normalization) up to a multiple of ``2**depth`` and the
output cropped back. The jitted forward is cached on the (hashable) graphdef, so a new
predictor for the same architecture, e.g. one per validation, does not recompile.
"""
from __future__ import annotations

from functools import partial

import jax
import numpy as np
from flax import nnx

from mrsynth.config import ModelConfig
from mrsynth.inference.volume import crop_to, pad_to_multiple

from jax_impl.precision import precision_scope


@partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


class JaxPredictor:
    """:class:`mrsynth.backend.Predictor` over a network (the model is switched to eval mode)."""

    def __init__(self, model: nnx.Module, model_config: ModelConfig, precision: str = "float32",
                 device: jax.Device | None = None) -> None:
        self.model_config = model_config
        self.precision = precision
        model.eval()
        self._graphdef, state = nnx.split(model)
        self._device = device or jax.local_devices()[0]
        self._state = jax.device_put(state, self._device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        cfg = self.model_config
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != cfg.dims + 2 or batch.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"predictor expects (B, {', '.join(['N'] * cfg.dims)}, {cfg.in_channels}), got {batch.shape}"
            )
        spatial = tuple(range(1, cfg.dims + 1))
        padded, crop = pad_to_multiple(batch, 2**cfg.depth, spatial)
        with precision_scope(self.precision):
            out = _forward(self._graphdef, self._state, jax.device_put(padded, self._device))
        return crop_to(np.asarray(out), crop[: cfg.dims + 1])
