"""The JAX building blocks of the networks: conv, norm and activation factories, and the layers
whose computation is our own.

Each is the same function as its twin in ``torch_ref/layers.py``, with the parameters and layouts
of ``nnx.Conv`` / ``nnx.GroupNorm`` (so ``jax_impl/weights.py`` converts them by leaf name). They
compute differently where XLA's default is inaccurate or slow: float32 chunked GroupNorm
statistics, torch-convention BatchNorm, 3x3x3 convolutions as one 2D convolution, the k2 s2
transposed convolution as a matmul, dropout masks from per-sample keys.
"""
from __future__ import annotations

import functools
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


def conv3d_formulation(name: str) -> str:
    """``model.conv3d`` resolved to ``stacked2d`` or ``native``; ``auto``: stacked2d on a CPU, else native.

    XLA:CPU lowers 3D and transposed convolutions slowly (the CPU 3D benchmark case: 26 ms/step
    stacked2d, 248 native). On a GPU/TPU the stacked formulation moves more bytes (3D anchor step
    scratch, docs/benchmarks/README.md) while cuDNN has native 3D kernels: native is expected to
    win there, unmeasured until a GPU run.
    """
    if name == "auto":
        return "stacked2d" if jax.default_backend() == "cpu" else "native"
    if name not in ("stacked2d", "native"):
        raise ValueError(f"conv3d must be auto, stacked2d or native, got {name!r}")
    return name


def conv(dims: int, cin: int, cout: int, kernel: int, *, stride: int = 1, dtype: jnp.dtype,
         rngs: nnx.Rngs, conv3d: str = "auto") -> nnx.Module:
    """A torch-style convolution: explicit symmetric padding ``kernel // 2``, bias, float32 params.

    3x3x3 stride-1 convolutions use :class:`DepthStackedConv3d` where ``conv3d`` resolves to
    ``stacked2d`` (:func:`conv3d_formulation`), XLA's own 3D convolution otherwise.
    """
    if dims == 3 and kernel == 3 and stride == 1 and conv3d_formulation(conv3d) == "stacked2d":
        return DepthStackedConv3d(cin, cout, dtype=dtype, rngs=rngs)
    return nnx.Conv(cin, cout, (kernel,) * dims, strides=(stride,) * dims,
                    padding=_padding(dims, kernel // 2), use_bias=True, dtype=dtype,
                    param_dtype=jnp.float32, rngs=rngs)


class DepthStackedConv3d(nnx.Module):
    """A 3x3x3 convolution (stride 1, padding 1) computed as one 2D convolution.

    The three depth-shifted copies of the input are stacked on the channel axis and convolved
    with the kernel reshaped to (3, 3, 3*in, out), depth slices folded into the batch:
    ``out[d] = sum_a conv2d(x[d + a - 1], kernel[a])``. Same parameters and layout as
    ``nnx.Conv`` (kernel (3, 3, 3, in, out), bias), same function; XLA lowers 3D convolutions
    poorly (~12x slower than PyTorch on CPU, ~3x on an H100, openxla/xla#34273) while its 2D
    convolutions reach the fast library kernels.
    """

    def __init__(self, cin: int, cout: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        reference = nnx.Conv(cin, cout, (3, 3, 3), use_bias=True, param_dtype=jnp.float32, rngs=rngs)
        self.kernel = nnx.Param(reference.kernel.get_value())
        self.bias = nnx.Param(reference.bias.get_value())
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel.get_value().astype(self.dtype)
        x = x.astype(self.dtype)
        batch, depth, height, width, cin = x.shape
        padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
        stacked = jnp.concatenate([padded[:, a:a + depth] for a in range(3)], axis=-1)  # (.., (a, in))
        kernel2d = kernel.transpose(1, 2, 0, 3, 4).reshape(3, 3, 3 * cin, -1)  # (h, w, (a, in), out)
        y = jax.lax.conv_general_dilated(
            stacked.reshape(batch * depth, height, width, 3 * cin), kernel2d, (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y.reshape(batch, depth, height, width, -1) + self.bias.get_value().astype(self.dtype)


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


STATS_CHUNK = 512  # longest run of values one float32 reduction adds up in sequence


def _chunked_sum(x: jax.Array) -> jax.Array:
    """Sum (B, N, C) over N, as sums of chunks of at most ``STATS_CHUNK`` values, then of chunks.

    XLA CPU adds a reduction's values one after another; over the 10^4-10^6 values of a norm
    group the float32 rounding error grows with the count. Zero padding makes N divisible.
    """
    batch, count, channels = x.shape
    chunks = -(-count // STATS_CHUNK)
    x = jnp.pad(x, ((0, 0), (0, chunks * STATS_CHUNK - count), (0, 0)))
    return jnp.sum(jnp.sum(x.reshape(batch, chunks, STATS_CHUNK, channels), axis=2), axis=1)


def _per_group(channel_sums: jax.Array, num_groups: int, count: int) -> jax.Array:
    """(B, C) sums over N -> the group means broadcast back to (B, 1, C); ``count`` values each."""
    batch, channels = channel_sums.shape
    means = channel_sums.reshape(batch, num_groups, -1).sum(axis=-1, keepdims=True) / count
    return jnp.broadcast_to(means, (batch, num_groups, channels // num_groups)).reshape(batch, 1, channels)


def _statistics_dtype(dtype: jnp.dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)  # bfloat16 -> float32; float64 stays float64


def _normalize_forward(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int, epsilon: float,
                       dtype: jnp.dtype) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """(y, residuals): group mean and two-pass variance from chunked sums; y in ``dtype``."""
    count = x.shape[1] * (x.shape[2] // num_groups)
    xf = x.astype(_statistics_dtype(x.dtype))
    mean = _per_group(_chunked_sum(xf), num_groups, count)
    var = _per_group(_chunked_sum(jnp.square(xf - mean)), num_groups, count)
    rstd = jax.lax.rsqrt(var + epsilon)
    y = (xf - mean) * rstd * scale + bias
    return y.astype(dtype), (x, scale, mean, rstd)


def _normalize_backward(num_groups: int, epsilon: float, dtype: jnp.dtype, residuals: tuple[jax.Array, ...],
                        grad: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The analytic gradient, per group: dx = rstd (h - mean(h) - xhat mean(h xhat)), h = g scale.

    One pass over (x, g) gives the per-channel sums of g and g xhat (they also are the bias and
    scale gradients), one more writes dx: nothing of the size of x but x itself is kept.
    """
    x, scale, mean, rstd = residuals
    count = x.shape[1] * (x.shape[2] // num_groups)
    stats = _statistics_dtype(x.dtype)
    g = grad.astype(stats)
    xhat = (x.astype(stats) - mean) * rstd
    sum_g, sum_g_xhat = _chunked_sum(g), _chunked_sum(g * xhat)
    mean_h = _per_group(sum_g * scale, num_groups, count)
    mean_h_xhat = _per_group(sum_g_xhat * scale, num_groups, count)
    dx = rstd * (g * scale - mean_h - xhat * mean_h_xhat)
    return dx.astype(x.dtype), sum_g_xhat.sum(axis=0).astype(scale.dtype), sum_g.sum(axis=0).astype(scale.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int, epsilon: float,
               dtype: jnp.dtype) -> jax.Array:
    """torch.nn.GroupNorm of (B, N, C) (N: the flattened spatial axes), output in ``dtype``.

    A custom VJP: autodiff of the forward would keep several float32 copies of x for the
    backward (~2x the bytes of ``nnx.GroupNorm`` per layer at the 2D anchor); this keeps x and
    the (B, 1, C) statistics only.
    """
    return _normalize_forward(x, scale, bias, num_groups, epsilon, dtype)[0]


group_norm.defvjp(_normalize_forward, _normalize_backward)


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm over channels-last input, with float32-accurate group statistics.

    Same parameters as ``nnx.GroupNorm`` (``scale``, ``bias``), but the mean and the two-pass
    variance are reduced per channel in chunks (:func:`_chunked_sum`), then over chunks and the
    group's channels: ``nnx.GroupNorm``'s single long float32 reduction drifts from torch, whose
    CPU kernels accumulate in double. Statistics are at least float32 (bfloat16 inputs are
    upcast; float64 stays float64); the output is in ``dtype``; the gradient is analytic
    (:func:`group_norm`). groups == channels is InstanceNorm.
    """

    def __init__(self, num_features: int, *, num_groups: int, epsilon: float, dtype: jnp.dtype) -> None:
        if num_features % num_groups:
            raise ValueError(f"{num_features} channels do not split into {num_groups} groups")
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.num_groups = num_groups
        self.epsilon = epsilon
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        y = group_norm(flat, self.scale[...], self.bias[...], self.num_groups, self.epsilon, jnp.dtype(self.dtype))
        return y.reshape(x.shape)


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


def make_norm(cfg: ModelConfig, channels: int, dtype: jnp.dtype,
              axis_name: str | None) -> nnx.Module | None:
    """The configured normalization for ``channels`` features (None for ``norm: none``)."""
    if cfg.norm in ("group", "instance"):
        groups = min(cfg.groups, channels) if cfg.norm == "group" else channels
        return GroupNorm(channels, num_groups=groups, epsilon=cfg.norm_eps, dtype=dtype)
    if cfg.norm == "batch":
        return BatchNorm(channels, epsilon=cfg.norm_eps, dtype=dtype, axis_name=axis_name)
    return None


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name == "relu":
        return jax.nn.relu
    if name == "leaky_relu":
        return lambda x: jax.nn.leaky_relu(x, LEAKY_SLOPE)
    return jax.nn.silu


def upsample_nearest(x: jax.Array, dims: int) -> jax.Array:
    """Nearest-neighbour x2 on every spatial axis (no antialiasing, unlike jax.image.resize)."""
    for axis in range(1, dims + 1):
        x = jnp.repeat(x, 2, axis=axis)
    return x


class ResizeConv(nnx.Module):
    """Nearest x2 then a 3x3 conv (attribute ``conv``, canonical ``ups.{i}.conv.*``)."""

    def __init__(self, dims: int, cin: int, cout: int, *, dtype: jnp.dtype, rngs: nnx.Rngs,
                 conv3d: str) -> None:
        self.dims = dims
        self.conv = conv(dims, cin, cout, 3, dtype=dtype, rngs=rngs, conv3d=conv3d)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(upsample_nearest(x, self.dims))


class ConvTranspose2x(nnx.Module):
    """torch ConvTranspose(k=2, s=2, no padding) computed as one matmul plus depth-to-space.

    With kernel = stride = 2 the output windows never overlap, so every input voxel writes its
    own 2x2(x2) block: ``out[2i+a, 2j+c, o] = sum_in x[i, j, in] * kernel[a, c, o, in] + bias[o]``.
    That is exactly the transposed convolution (same parameters, same layout as
    ``nnx.ConvTranspose(..., transpose_kernel=True)``: kernel (k..., out, in)), but XLA:CPU runs
    it as a dense matmul instead of its slow transposed-convolution lowering (jax#23783). In 3D,
    ``conv3d`` resolving to ``native`` computes it with ``lax.conv_transpose`` instead.
    """

    def __init__(self, dims: int, cin: int, cout: int, *, dtype: jnp.dtype, rngs: nnx.Rngs,
                 conv3d: str = "auto") -> None:
        self.dims = dims
        self.dtype = dtype
        self.native = dims == 3 and conv3d_formulation(conv3d) == "native"
        fan_in = cin * 2**dims
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.kernel = nnx.Param(init(rngs.params(), (2,) * dims + (cout, cin), jnp.float32)
                                * math.sqrt(cin / fan_in))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel.get_value().astype(self.dtype)
        x = x.astype(self.dtype)
        if self.native:
            y = jax.lax.conv_transpose(x, kernel, (2, 2, 2), "VALID", transpose_kernel=True,
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
            return y + self.bias.get_value().astype(self.dtype)
        if self.dims == 2:
            y = jnp.einsum("bhwi,acoi->bhawco", x, kernel)
        else:
            y = jnp.einsum("bdhwi,aceoi->bdahcweo", x, kernel)
        batch, *spatial, _ = x.shape
        y = y.reshape(batch, *(2 * s for s in spatial), kernel.shape[-2])
        return y + self.bias.get_value().astype(self.dtype)
