"""Eval-mode predictor: numpy batches in and out, plus the device verbs of whole-volume synthesis.

Dropout off, BatchNorm on running statistics, matmuls at the given named precision
(``float32`` unless told: full float32, the arithmetic the parity checks verify; a predictor
loaded from a run or weight file gets the run's ``train.precision`` and a network built in its
compute dtype). Inputs are zero-padded (background is 0 after normalization) up to a multiple
of ``2**depth`` and the output cropped back. The jitted functions are cached on the (hashable)
graphdef, so a new predictor for the same architecture, e.g. one per validation, does not
recompile; the volume verbs take full-size batches and a traced ``count``, so a volume compiles
each verb once, and donate the sums they update, so XLA adds into them in place.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mrsynth.config import ModelConfig
from mrsynth.inference.volume import crop_to, pad_to_multiple

from jax_impl.precision import precision_scope

def _network(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, multiple: int) -> jax.Array:
    """The network on a channels-last batch, its spatial axes zero-padded to ``multiple``."""
    spatial = x.shape[1:-1]
    widths = [(0, 0)] + [(0, -n % multiple) for n in spatial] + [(0, 0)]
    y = nnx.merge(graphdef, state)(jnp.pad(x, widths))
    return y[(slice(None), *(slice(0, n) for n in spatial))].astype(jnp.float32)


@partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


@partial(jax.jit, static_argnums=(0, 6, 7), donate_argnums=2)
def _predict_slices(graphdef: nnx.GraphDef, state: nnx.State, out: jax.Array, volume: jax.Array,
                    rows: jax.Array, count: jax.Array, axis: int, multiple: int) -> jax.Array:
    batch = jnp.moveaxis(jnp.take(volume, rows, axis=axis), (axis, axis + 1), (0, 3))  # (B, S1, S2, C)
    pred = _network(graphdef, state, batch, multiple)[..., 0]
    real = jnp.arange(rows.shape[0]) < count
    targets = jnp.where(real, rows[:, rows.shape[1] // 2], out.shape[axis])  # padding: out of range, dropped
    return out.at[(slice(None),) * axis + (targets,)].set(jnp.moveaxis(pred, 0, axis), mode="drop")


@partial(jax.jit, static_argnums=(0, 7), donate_argnums=2)
def _predict_patches(graphdef: nnx.GraphDef, state: nnx.State, accum: jax.Array, volume: jax.Array,
                     starts: jax.Array, count: jax.Array, weight: jax.Array, multiple: int) -> jax.Array:
    patch = weight.shape
    batch = jax.vmap(lambda s: jax.lax.dynamic_slice(volume, s, patch))(starts)[..., None]
    pred = _network(graphdef, state, batch, multiple)[..., 0] * weight

    def add(i: jax.Array, total: jax.Array) -> jax.Array:
        window = jax.lax.dynamic_slice(total, starts[i], patch)
        return jax.lax.dynamic_update_slice(total, window + pred[i], starts[i])

    return jax.lax.fori_loop(0, count, add, accum)


@partial(jax.jit, static_argnums=4)
def _normalize(accum: jax.Array, fz: jax.Array, fy: jax.Array, fx: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    out = accum * (fz[:, None, None] * fy[None, :, None] * fx[None, None, :])
    return out[: shape[0], : shape[1], : shape[2]]


@jax.jit
def _clip_and_mask(volume: jax.Array, mask: jax.Array, lo: jax.Array, hi: jax.Array) -> tuple[jax.Array, jax.Array]:
    inside = mask > 0
    clipped = jnp.count_nonzero(((volume < lo) | (volume > hi)) & inside)
    fraction = clipped.astype(jnp.float32) / jnp.maximum(jnp.count_nonzero(inside), 1).astype(jnp.float32)
    return jnp.where(inside, jnp.clip(volume, lo, hi), 0.0), fraction


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
        self._multiple = 2**model_config.depth

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        cfg = self.model_config
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != cfg.dims + 2 or batch.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"predictor expects (B, {', '.join(['N'] * cfg.dims)}, {cfg.in_channels}), got {batch.shape}"
            )
        spatial = tuple(range(1, cfg.dims + 1))
        padded, crop = pad_to_multiple(batch, self._multiple, spatial)
        with precision_scope(self.precision):
            out = _forward(self._graphdef, self._state, jax.device_put(padded, self._device))
        return crop_to(np.asarray(out, dtype=np.float32), crop[: cfg.dims + 1])

    # --- device verbs of whole-volume synthesis (mrsynth.backend.Predictor) ---
    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array if array.dtype == np.bool_ else np.asarray(array, np.float32), self._device)

    def to_host(self, array: jax.Array) -> np.ndarray:
        return np.asarray(array, dtype=np.float32)

    def zeros(self, shape: tuple[int, ...]) -> jax.Array:
        if self._device.platform == "cpu":  # XLA:CPU runs a fill program inline, on the caller's thread;
            return jax.device_put(np.zeros(shape, np.float32), self._device)  # a transfer has its own
        return jnp.zeros(shape, jnp.float32, device=self._device)  # a device memset, queued

    def predict_slices(self, out: jax.Array, volume: jax.Array, rows: np.ndarray, count: int, axis: int) -> jax.Array:
        with precision_scope(self.precision):
            return _predict_slices(self._graphdef, self._state, out, volume, rows, np.int32(count), axis,
                                   self._multiple)

    def predict_patches(self, accum: jax.Array, volume: jax.Array, starts: np.ndarray, count: int,
                        weight: jax.Array) -> jax.Array:
        with precision_scope(self.precision):
            return _predict_patches(self._graphdef, self._state, accum, volume, starts, np.int32(count), weight,
                                    self._multiple)

    def normalize(self, accum: jax.Array, factors: tuple[np.ndarray, np.ndarray, np.ndarray],
                  shape: tuple[int, int, int]) -> jax.Array:
        return _normalize(accum, *factors, tuple(shape))

    def clip_and_mask(self, volume: jax.Array, mask: jax.Array, lo: float, hi: float
                      ) -> tuple[jax.Array, jax.Array]:
        return _clip_and_mask(volume, mask, np.float32(lo), np.float32(hi))
