"""The JAX networks by ``model.arch`` name, and the U-Net of docs/ARCHITECTURE.md: how its layers are composed.

The module tree mirrors the PyTorch ``state_dict`` names (``encoders.0.conv1``, ``ups.1.conv``,
``head``...), so ``jax_impl/weights.py`` converts by a table of layout rules. Parameters are
float32; ``compute_dtype`` (bfloat16) only changes the activations; the output is float32.
The layers themselves are in ``jax_impl/layers.py``.
"""
from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from mrsynth.config import ModelConfig
from mrsynth.registry import Registry

from jax_impl.layers import ConvTranspose2x, Dropout, ResizeConv, activation, conv, make_norm


class ConvBlock(nnx.Module):
    """conv-norm-act-dropout-conv-norm(+skip)-act; attributes conv1/norm1/conv2/norm2/skip."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int, *, dtype: jnp.dtype,
                 axis_name: str | None, dropout_id: int, rngs: nnx.Rngs) -> None:
        self.conv1 = conv(cfg.dims, cin, cout, 3, dtype=dtype, rngs=rngs, conv3d=cfg.conv3d)
        self.norm1 = make_norm(cfg, cout, dtype, axis_name)
        self.conv2 = conv(cfg.dims, cout, cout, 3, dtype=dtype, rngs=rngs, conv3d=cfg.conv3d)
        self.norm2 = make_norm(cfg, cout, dtype, axis_name)
        self.dropout = Dropout(cfg.dropout, dropout_id) if cfg.dropout > 0 else None
        self.residual = cfg.residual
        self.skip = conv(cfg.dims, cin, cout, 1, dtype=dtype, rngs=rngs) if cfg.residual and cin != cout else None
        self.activation = cfg.activation

    def __call__(self, x: jax.Array, sample_keys: jax.Array | None = None) -> jax.Array:
        act = activation(self.activation)
        h = self.conv1(x)
        if self.norm1 is not None:
            h = self.norm1(h)
        h = act(h)
        if self.dropout is not None:
            h = self.dropout(h, sample_keys)
        h = self.conv2(h)
        if self.norm2 is not None:
            h = self.norm2(h)
        if self.residual:
            h = h + (self.skip(x) if self.skip is not None else x.astype(h.dtype))
        return act(h)


class UNet(nnx.Module):
    """Encoder/decoder with skip connections (skip first in the concat), linear float32 output.

    Input and output are channels-last: (B, *spatial, C). Spatial sizes must be multiples of
    ``2**depth`` (predictors pad). ``sample_keys`` (B, 2) uint32 are needed only for dropout
    in training mode. ``cfg.conv3d`` picks how 3D convolutions are computed (same function).
    """

    def __init__(self, cfg: ModelConfig, *, compute_dtype: jnp.dtype = jnp.float32,
                 axis_name: str | None = None, rngs: nnx.Rngs) -> None:
        self.dims = cfg.dims
        self.depth = cfg.depth
        ch = cfg.level_channels()
        L, dt = cfg.depth, compute_dtype
        self.encoders = nnx.List([
            ConvBlock(cfg, cfg.in_channels if i == 0 else ch[i - 1], ch[i], dtype=dt,
                      axis_name=axis_name, dropout_id=i, rngs=rngs)
            for i in range(L)
        ])
        self.downs = nnx.List([
            conv(cfg.dims, ch[i], ch[i], 3, stride=2, dtype=dt, rngs=rngs) for i in range(L)
        ]) if cfg.downsample == "conv" else None
        self.bottleneck = ConvBlock(cfg, ch[L - 1], ch[L], dtype=dt, axis_name=axis_name,
                                    dropout_id=L, rngs=rngs)
        if cfg.upsample == "transpose":
            self.ups = nnx.List([ConvTranspose2x(cfg.dims, ch[i + 1], ch[i], dtype=dt, rngs=rngs, conv3d=cfg.conv3d)
                                 for i in range(L)])
        else:
            self.ups = nnx.List([ResizeConv(cfg.dims, ch[i + 1], ch[i], dtype=dt, rngs=rngs, conv3d=cfg.conv3d)
                                 for i in range(L)])
        self.decoders = nnx.List([
            ConvBlock(cfg, 2 * ch[i], ch[i], dtype=dt, axis_name=axis_name,
                      dropout_id=L + 1 + i, rngs=rngs)
            for i in range(L)
        ])
        # float32 (float64 under x64) head: in bfloat16 its bias gradient, a sum over every output
        # voxel, would be accumulated in bfloat16 (-0.0625 for an exact -0.655).
        self.head = conv(cfg.dims, ch[0], cfg.out_channels, 1, dtype=jnp.promote_types(dt, jnp.float32), rngs=rngs)

    def _down(self, i: int, x: jax.Array) -> jax.Array:
        if self.downs is not None:
            return self.downs[i](x)
        window = (2,) * self.dims
        return nnx.max_pool(x, window, strides=window, padding="VALID")

    def __call__(self, x: jax.Array, sample_keys: jax.Array | None = None) -> jax.Array:
        skips = []
        for i in range(self.depth):
            x = self.encoders[i](x, sample_keys)
            skips.append(x)
            x = self._down(i, x)
        x = self.bottleneck(x, sample_keys)
        for i in reversed(range(self.depth)):
            x = self.ups[i](x)
            x = self.decoders[i](jnp.concatenate([skips[i], x.astype(skips[i].dtype)], axis=-1), sample_keys)
        return self.head(x.astype(jnp.promote_types(x.dtype, jnp.float32)))  # bf16 -> f32; f64 kept


class Builder(Protocol):
    """Builds a freshly initialized network in training mode, channels-last in and float32 out,
    called as ``model(x, sample_keys)`` (keys only for dropout). Its NNX paths must mirror the torch
    twin's ``state_dict`` names (``jax_impl/weights.py``)."""

    def __call__(self, cfg: ModelConfig, *, compute_dtype: jnp.dtype, axis_name: str | None,
                 rngs: nnx.Rngs) -> nnx.Module: ...


# model.arch -> builder; every architecture registers here and its torch twin in torch_ref/model.py.
ARCHITECTURES: Registry[Builder] = Registry("model.arch", "architecture", "jax backend")
register_architecture = ARCHITECTURES.register
unregister_architecture = ARCHITECTURES.unregister
register_architecture("unet", UNet)


def build_model(cfg: ModelConfig, *, seed: int = 0, compute_dtype: str = "float32",
                axis_name: str | None = None) -> nnx.Module:
    """A freshly initialized ``cfg.arch`` network in training mode."""
    builder = ARCHITECTURES.lookup(cfg.arch)
    return builder(cfg, compute_dtype=jnp.dtype(compute_dtype), axis_name=axis_name, rngs=nnx.Rngs(params=seed))


# (builder, config, compute dtype) -> (graphdef, abstract state): tracing a network's
# initializers costs about as much as a small forward; a process that loads runs (evaluate,
# predict, the learning curve's points) traces each architecture once.
_STRUCTURES: dict[tuple[Builder, str, str], tuple[nnx.GraphDef, nnx.State]] = {}


def model_structure(cfg: ModelConfig, *, compute_dtype: str = "float32") -> nnx.Module:
    """The ``cfg.arch`` network with abstract variables (shapes and dtypes, no initializer run or
    compiled): for a caller that sets every variable next, from a checkpoint or a weight file.
    Each call returns a new module."""
    key = (ARCHITECTURES.lookup(cfg.arch), repr(cfg), compute_dtype)
    if key not in _STRUCTURES:
        _STRUCTURES[key] = nnx.split(nnx.eval_shape(lambda: build_model(cfg, compute_dtype=compute_dtype)))
    return nnx.merge(*_STRUCTURES[key], copy=True)


def in_compute_dtype(model: nnx.Module, cfg: ModelConfig, compute_dtype: str) -> nnx.Module:
    """``model``'s parameters and statistics in a network of the same config computing in
    ``compute_dtype`` (the dtype is fixed when a network is built)."""
    if compute_dtype == "float32":
        return model
    target = model_structure(cfg, compute_dtype=compute_dtype)
    nnx.update(target, nnx.state(model))
    return target
