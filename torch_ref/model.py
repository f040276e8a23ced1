"""The torch networks by ``model.arch`` name, and the U-Net of docs/ARCHITECTURE.md: how its layers are composed.

Its ``state_dict`` names are the canonical names, 2D or 3D per ``ModelConfig.dims``. Every module
attribute name here is part of the portable weight format, so renaming one is a format change.
The layers themselves are in ``torch_ref/layers.py``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mrsynth.config import ModelConfig
from mrsynth.registry import Registry
from torch_ref.layers import (Dropout, ResizeConv, conv_class, conv_transpose_class, make_activation,
                              make_norm)


class ConvBlock(nn.Module):
    """conv-norm-act-dropout-conv-norm(+skip)-act, names conv1/norm1/conv2/norm2/skip."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int) -> None:
        super().__init__()
        conv = conv_class(cfg.dims)
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.norm1 = make_norm(cfg, cout) or nn.Identity()
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.norm2 = make_norm(cfg, cout) or nn.Identity()
        self.act = make_activation(cfg.activation)
        self.dropout = Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.residual = cfg.residual
        if cfg.residual and cin != cout:
            self.skip = conv(cin, cout, 1)
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.act(self.norm1(self.conv1(x))))
        h = self.norm2(self.conv2(h))
        if self.residual:
            h = h + self.skip(x)
        return self.act(h)


class UNet(nn.Module):
    """Encoder/decoder with skip connections (skip first in the concat), linear float32 output."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = cfg.level_channels()
        depth = cfg.depth
        conv = conv_class(cfg.dims)
        self.encoders = nn.ModuleList(
            ConvBlock(cfg, cfg.in_channels if i == 0 else ch[i - 1], ch[i]) for i in range(depth)
        )
        if cfg.downsample == "conv":
            self.downs = nn.ModuleList(conv(ch[i], ch[i], 3, stride=2, padding=1) for i in range(depth))
        else:
            pool = nn.MaxPool2d if cfg.dims == 2 else nn.MaxPool3d
            self.downs = nn.ModuleList(pool(2) for _ in range(depth))
        self.bottleneck = ConvBlock(cfg, ch[depth - 1], ch[depth])
        if cfg.upsample == "transpose":
            up = conv_transpose_class(cfg.dims)
            self.ups = nn.ModuleList(up(ch[i + 1], ch[i], 2, stride=2) for i in range(depth))
        else:
            self.ups = nn.ModuleList(ResizeConv(cfg, ch[i + 1], ch[i]) for i in range(depth))
        self.decoders = nn.ModuleList(ConvBlock(cfg, 2 * ch[i], ch[i]) for i in range(depth))
        self.head = conv(ch[0], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for i in reversed(range(self.config.depth)):
            x = self.ups[i](x)
            x = self.decoders[i](torch.cat([skips[i], x], dim=1))
        out = self.head(x)
        return out.to(torch.promote_types(out.dtype, torch.float32))  # bf16 -> f32; f64 kept


def decayed_parameter_names(model: nn.Module) -> set[str]:
    """Canonical names that get weight decay: conv / conv-transpose weights (ndim >= 3)."""
    return {name for name, p in model.named_parameters() if name.endswith(".weight") and p.ndim >= 3}


# A builder returns a freshly initialized network in training mode: channels-first in, float32 out,
# its state_dict names are the canonical names of the portable weight file.
Builder = Callable[[ModelConfig], nn.Module]
# model.arch -> builder; every architecture registers here and its JAX twin in jax_impl/model.py.
ARCHITECTURES: Registry[Builder] = Registry("model.arch", "architecture", "torch backend")
register_architecture = ARCHITECTURES.register
unregister_architecture = ARCHITECTURES.unregister
register_architecture("unet", UNet)


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialized ``cfg.arch`` network (from torch's global RNG) in training mode."""
    return ARCHITECTURES.lookup(cfg.arch)(cfg)
