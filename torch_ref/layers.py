"""The torch building blocks of the networks: conv, norm and activation factories, dropout.

Each is the twin of a layer in ``jax_impl/layers.py`` and computes the same function; the
torch ones define the canonical parameter names and layouts of the portable weight file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrsynth.config import ModelConfig

LEAKY_SLOPE = 0.01


def conv_class(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def conv_transpose_class(dims: int) -> type[nn.Module]:
    return nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d


def make_norm(cfg: ModelConfig, channels: int) -> nn.Module | None:
    """The configured normalization for ``channels`` features (None for ``norm: none``)."""
    if cfg.norm == "group":
        return nn.GroupNorm(min(cfg.groups, channels), channels, eps=cfg.norm_eps)
    if cfg.norm == "instance":
        return nn.GroupNorm(channels, channels, eps=cfg.norm_eps)
    if cfg.norm == "batch":
        batch_norm = nn.BatchNorm2d if cfg.dims == 2 else nn.BatchNorm3d
        return batch_norm(channels, eps=cfg.norm_eps, momentum=0.1)
    return None


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    return nn.SiLU()


def keep_mask(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Dropout's mask: 1 where a uniform draw from ``generator`` is at least ``p``, else 0."""
    noise = torch.rand(x.shape, generator=generator, device=x.device)
    return (noise >= p).to(x.dtype)


class Dropout(nn.Module):
    """Elementwise dropout drawing its mask from an explicit generator.

    A generator owned by the training engine (not the global RNG) is what makes a resumed run
    draw exactly the masks the uninterrupted run would have drawn.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None
        self.draw_keep_mask = keep_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * self.draw_keep_mask(x, self.p, self.generator) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None, compiled: bool = False) -> None:
    """Point every dropout layer of ``model`` at ``generator``. ``compiled`` (the model goes
    through ``torch.compile``): the masks are drawn outside the compiled graph, eagerly from that
    generator. Only then is ``torch._dynamo`` imported: the import costs seconds in every torch
    process, so a decorator at class level would charge it to every ``predict``."""
    draw = torch.compiler.disable(keep_mask) if compiled else keep_mask
    for module in model.modules():
        if isinstance(module, Dropout):
            module.generator = generator
            module.draw_keep_mask = draw


class ResizeConv(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv (submodule ``conv``)."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_class(cfg.dims)(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
