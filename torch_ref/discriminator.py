"""pix2pix's conditional PatchGAN discriminator in PyTorch (``DiscriminatorConfig``), 2D or 3D.

It scores overlapping patches of (T1 channels, T2) stacked on the channel axis: real pairs
towards 1, synthesized ones towards 0. Names mirror ``jax_impl/discriminator.py``
(``blocks.{i}.conv``, ``blocks.{i}.norm``, ``head``) so weights copy between frameworks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrsynth.config import DiscriminatorConfig

LEAKY_SLOPE = 0.2  # pix2pix
KERNEL = 4
NORM_EPS = 1e-5


class DiscriminatorBlock(nn.Module):
    """4x4 conv (padding 1), optional instance norm, LeakyReLU 0.2."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, norm: bool) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(cin, cout, KERNEL, stride=stride, padding=1)
        self.norm = nn.GroupNorm(cout, cout, eps=NORM_EPS) if norm else None
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.norm is not None:
            h = self.norm(h)
        return self.act(h)


class PatchDiscriminator(nn.Module):
    """(B, in_channels, *spatial) -> (B, 1, *patch grid) logits (no final activation)."""

    def __init__(self, cfg: DiscriminatorConfig, dims: int, in_channels: int) -> None:
        super().__init__()
        widths = cfg.layer_widths()
        self.blocks = nn.ModuleList()
        cin = in_channels
        for i, width in enumerate(widths):
            self.blocks.append(DiscriminatorBlock(dims, cin, width, stride=2 if i < cfg.layers else 1,
                                                  norm=cfg.norm == "instance" and i > 0))
            cin = width
        self.head = (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, 1, KERNEL, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_discriminator(cfg: DiscriminatorConfig, dims: int, in_channels: int, seed: int = 0) -> PatchDiscriminator:
    """A freshly initialized discriminator (torch's default init, seeded without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PatchDiscriminator(cfg, dims, in_channels)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Half the sum of the real-pair and synthesized-pair terms (pix2pix halves D's loss), float32.

    ``lsgan``: (D(real) - 1)^2 and D(fake)^2; ``nonsaturating``: binary cross-entropy on logits.
    """
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "lsgan":
        return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's term: make D score synthesized pairs as real, float32."""
    fake = fake_logits.float()
    if kind == "lsgan":
        return (fake - 1.0).square().mean()
    return F.softplus(-fake).mean()
