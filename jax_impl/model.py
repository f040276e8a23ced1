"""The U-Net of docs/ARCHITECTURE.md in Flax NNX, channels-last.

The module tree mirrors the PyTorch ``state_dict`` names (``encoders.0.conv1``, ``ups.1.conv``,
``head``...), so ``jax_impl/weights.py`` converts by a table of layout rules. Parameters are
float32; ``compute_dtype`` (bfloat16) only changes the activations; the output is float32.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mrsynth.config import ModelConfig

LEAKY_SLOPE = 0.01
BATCHNORM_MOMENTUM = 0.1  # torch convention: new = (1 - m) * old + m * batch


def _padding(dims: int, pad: int) -> tuple[tuple[int, int], ...]:
    return ((pad, pad),) * dims


def conv(dims: int, cin: int, cout: int, kernel: int, *, stride: int = 1, dtype: jnp.dtype,
         rngs: nnx.Rngs) -> nnx.Conv:
    """A torch-style convolution: explicit symmetric padding ``kernel // 2``, bias, float32 params."""
    return nnx.Conv(cin, cout, (kernel,) * dims, strides=(stride,) * dims,
                    padding=_padding(dims, kernel // 2), use_bias=True, dtype=dtype,
                    param_dtype=jnp.float32, rngs=rngs)


class BatchNorm(nnx.Module):
    """torch.nn.BatchNorm semantics: momentum 0.1, running variance tracked unbiased (n / (n-1)).

    ``nnx.BatchNorm`` tracks the biased variance with the opposite momentum convention, so the
    two frameworks' running stats would drift apart. Statistics are computed in float32 over
    every axis but the channel one; ``axis_name`` averages them across ``pmap`` devices (the
    sharded path needs nothing: jit sees the global batch).
    """

    def __init__(self, num_features: int, *, epsilon: float, dtype: jnp.dtype,
                 axis_name: str | None = None) -> None:
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.running_mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.running_var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.epsilon = epsilon
        self.dtype = dtype
        self.axis_name = axis_name
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float64 stays float64 (parity)
        if self.use_running_average:
            mean, var = self.running_mean[...], self.running_var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            count = math.prod(x.shape[:-1])
            mean = jnp.mean(xf, axes)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
                count *= jax.lax.axis_size(self.axis_name)
            var = jnp.mean(jnp.square(xf - mean), axes)
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
            unbiased = var * (count / max(count - 1, 1))
            m = BATCHNORM_MOMENTUM
            self.running_mean[...] = (1 - m) * self.running_mean[...] + m * jax.lax.stop_gradient(mean)
            self.running_var[...] = (1 - m) * self.running_var[...] + m * jax.lax.stop_gradient(unbiased)
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * self.scale[...] + self.bias[...]
        return y.astype(self.dtype)


class Dropout(nnx.Module):
    """Elementwise dropout whose mask depends only on (step key, sample index, layer).

    Each sample draws from its own key, so the masks are the same whether the batch runs on
    one device, is sharded over many, or is split across ``pmap`` devices; ``layer_id``
    separates the layers. Identity in eval mode (``deterministic``).
    """

    def __init__(self, rate: float, layer_id: int) -> None:
        self.rate = rate
        self.layer_id = layer_id
        self.deterministic = False

    def __call__(self, x: jax.Array, sample_keys: jax.Array | None) -> jax.Array:
        if self.deterministic:
            return x
        if sample_keys is None:
            raise ValueError("dropout in training mode needs per-sample keys (sample_keys=...)")
        keys = jax.vmap(jax.random.fold_in, (0, None))(sample_keys, self.layer_id)
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - self.rate, x.shape[1:]))(keys)
        return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


def make_norm(cfg: ModelConfig, channels: int, dtype: jnp.dtype, axis_name: str | None,
              rngs: nnx.Rngs) -> nnx.Module | None:
    """The configured normalization for ``channels`` features (None for ``norm: none``)."""
    if cfg.norm in ("group", "instance"):
        groups = min(cfg.groups, channels) if cfg.norm == "group" else channels
        return nnx.GroupNorm(channels, num_groups=groups, epsilon=cfg.norm_eps,
                             use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    if cfg.norm == "batch":
        return BatchNorm(channels, epsilon=cfg.norm_eps, dtype=dtype, axis_name=axis_name)
    return None


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name == "relu":
        return jax.nn.relu
    if name == "leaky_relu":
        return lambda x: jax.nn.leaky_relu(x, LEAKY_SLOPE)
    return jax.nn.silu


class ConvBlock(nnx.Module):
    """conv-norm-act-dropout-conv-norm(+skip)-act; attributes conv1/norm1/conv2/norm2/skip."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int, *, dtype: jnp.dtype,
                 axis_name: str | None, dropout_id: int, rngs: nnx.Rngs) -> None:
        self.conv1 = conv(cfg.dims, cin, cout, 3, dtype=dtype, rngs=rngs)
        self.norm1 = make_norm(cfg, cout, dtype, axis_name, rngs)
        self.conv2 = conv(cfg.dims, cout, cout, 3, dtype=dtype, rngs=rngs)
        self.norm2 = make_norm(cfg, cout, dtype, axis_name, rngs)
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


def upsample_nearest(x: jax.Array, dims: int) -> jax.Array:
    """Nearest-neighbour x2 on every spatial axis (no antialiasing, unlike jax.image.resize)."""
    for axis in range(1, dims + 1):
        x = jnp.repeat(x, 2, axis=axis)
    return x


class ResizeConv(nnx.Module):
    """Nearest x2 then a 3x3 conv (attribute ``conv``, canonical ``ups.{i}.conv.*``)."""

    def __init__(self, dims: int, cin: int, cout: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        self.dims = dims
        self.conv = conv(dims, cin, cout, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(upsample_nearest(x, self.dims))


def conv_transpose(dims: int, cin: int, cout: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.ConvTranspose:
    """torch ConvTranspose(k=2, s=2): ``transpose_kernel=True`` makes the kernel (k..., out, in),
    the torch (in, out, k...) weight permuted, with torch's (flipped) spatial convention."""
    return nnx.ConvTranspose(cin, cout, (2,) * dims, strides=(2,) * dims, padding="VALID",
                             transpose_kernel=True, use_bias=True, dtype=dtype,
                             param_dtype=jnp.float32, rngs=rngs)


class UNet(nnx.Module):
    """Encoder/decoder with skip connections (skip first in the concat), linear float32 output.

    Input and output are channels-last: (B, *spatial, C). Spatial sizes must be multiples of
    ``2**depth`` (predictors pad). ``sample_keys`` (B, 2) uint32 are needed only for dropout
    in training mode.
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
            self.ups = nnx.List([conv_transpose(cfg.dims, ch[i + 1], ch[i], dtype=dt, rngs=rngs)
                                 for i in range(L)])
        else:
            self.ups = nnx.List([ResizeConv(cfg.dims, ch[i + 1], ch[i], dtype=dt, rngs=rngs)
                                 for i in range(L)])
        self.decoders = nnx.List([
            ConvBlock(cfg, 2 * ch[i], ch[i], dtype=dt, axis_name=axis_name,
                      dropout_id=L + 1 + i, rngs=rngs)
            for i in range(L)
        ])
        self.head = conv(cfg.dims, ch[0], cfg.out_channels, 1, dtype=dt, rngs=rngs)

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
        return self.head(x).astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> f32; f64 kept


def build_model(cfg: ModelConfig, *, seed: int = 0, compute_dtype: str = "float32",
                axis_name: str | None = None) -> UNet:
    """A freshly initialized U-Net in training mode."""
    return UNet(cfg, compute_dtype=jnp.dtype(compute_dtype), axis_name=axis_name,
                rngs=nnx.Rngs(params=seed))
