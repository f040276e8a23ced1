"""pix2pix's conditional PatchGAN discriminator in Flax NNX (``DiscriminatorConfig``), 2D or 3D.

Channels-last; the module tree mirrors ``torch_ref/discriminator.py`` (``blocks.{i}.conv``,
``blocks.{i}.norm``, ``head``) so ``jax_impl/weights.py``'s name and layout rules copy its
weights between frameworks. Instance norm is the project's float32-accurate GroupNorm with one
group per channel, as in the U-Net.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mrsynth.config import DiscriminatorConfig

from jax_impl.layers import GroupNorm

LEAKY_SLOPE = 0.2  # pix2pix
KERNEL = 4
NORM_EPS = 1e-5


def _conv(dims: int, cin: int, cout: int, stride: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (KERNEL,) * dims, strides=(stride,) * dims, padding=((1, 1),) * dims,
                    use_bias=True, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class DiscriminatorBlock(nnx.Module):
    """4x4 conv (padding 1), optional instance norm, LeakyReLU 0.2."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, norm: bool, *, dtype: jnp.dtype,
                 rngs: nnx.Rngs) -> None:
        self.conv = _conv(dims, cin, cout, stride, dtype, rngs)
        self.norm = GroupNorm(cout, num_groups=cout, epsilon=NORM_EPS, dtype=dtype) if norm else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv(x)
        if self.norm is not None:
            h = self.norm(h)
        return jax.nn.leaky_relu(h, LEAKY_SLOPE)


class PatchDiscriminator(nnx.Module):
    """(B, *spatial, in_channels) -> (B, *patch grid, 1) float32 logits."""

    def __init__(self, cfg: DiscriminatorConfig, dims: int, in_channels: int, *,
                 compute_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        widths = cfg.layer_widths()
        blocks = []
        cin = in_channels
        for i, width in enumerate(widths):
            blocks.append(DiscriminatorBlock(dims, cin, width, 2 if i < cfg.layers else 1,
                                             cfg.norm == "instance" and i > 0, dtype=compute_dtype, rngs=rngs))
            cin = width
        self.blocks = nnx.List(blocks)
        self.head = _conv(dims, cin, 1, 1, jnp.promote_types(compute_dtype, jnp.float32), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return self.head(x.astype(jnp.promote_types(x.dtype, jnp.float32)))


def build_discriminator(cfg: DiscriminatorConfig, dims: int, in_channels: int, *, seed: int = 0,
                        compute_dtype: str = "float32") -> PatchDiscriminator:
    """A freshly initialized discriminator (its own parameter stream, seeded)."""
    return PatchDiscriminator(cfg, dims, in_channels, compute_dtype=jnp.dtype(compute_dtype),
                              rngs=nnx.Rngs(params=seed))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str) -> jax.Array:
    """Half the sum of the real-pair and synthesized-pair terms (pix2pix halves D's loss), float32.

    ``lsgan``: (D(real) - 1)^2 and D(fake)^2; ``nonsaturating``: binary cross-entropy on logits.
    """
    real, fake = real_logits.astype(jnp.float32), fake_logits.astype(jnp.float32)
    if kind == "lsgan":
        return 0.5 * (jnp.mean(jnp.square(real - 1.0)) + jnp.mean(jnp.square(fake)))
    return 0.5 * (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake)))


def generator_adversarial_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
    """The generator's term: make D score synthesized pairs as real, float32."""
    fake = fake_logits.astype(jnp.float32)
    if kind == "lsgan":
        return jnp.mean(jnp.square(fake - 1.0))
    return jnp.mean(jax.nn.softplus(-fake))
