"""Framework-free descriptions of the networks: the layers that hold parameters or do the arithmetic.

One description per architecture (registered under its ``model.arch`` name) is where parameter
counts and FLOP counts (:mod:`mrsynth.bench.flops`) come from, so they follow the network
instead of a third hand-written copy of it. A description lists every conv, transposed conv
and norm with its channels, kernel, stride and output scale (output spatial size over the input
sample's, per axis); the tests check its parameter count against both backends' models. An
architecture without a description has unknown counts (``describe`` returns None).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from mrsynth.config import ModelConfig
from mrsynth.registry import Registry

OPS = ("conv", "conv_transpose", "norm")


@dataclass(frozen=True)
class Layer:
    """One layer: ``name`` is its canonical (torch ``state_dict``) prefix.

    conv: kernel^dims taps per output voxel, explicit padding kernel // 2, bias. conv_transpose:
    kernel^dims taps per input voxel, bias. norm: per-channel affine scale and shift over
    ``cout`` channels (``cin == cout``, kernel and stride 1).
    """

    name: str
    op: str
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    scale: Fraction = Fraction(1)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"layer {self.name}: op {self.op!r} is not one of {', '.join(OPS)}")

    def parameters(self, dims: int) -> int:
        if self.op == "norm":
            return 2 * self.cout
        return self.cin * self.cout * self.kernel**dims + self.cout


@dataclass(frozen=True)
class Network:
    """A network's layers, for ``dims``-dimensional samples."""

    dims: int
    layers: tuple[Layer, ...]

    def parameter_count(self) -> int:
        """Trainable parameters (BatchNorm running statistics are buffers, not counted)."""
        return sum(layer.parameters(self.dims) for layer in self.layers)

    def output_voxels(self, layer: Layer, spatial: tuple[int, ...]) -> int:
        """Voxels of ``layer``'s output for one input sample of size ``spatial``."""
        if len(spatial) != self.dims:
            raise ValueError(f"spatial size {tuple(spatial)} does not match dims={self.dims}")
        return math.prod(int(size * layer.scale) for size in spatial)


Describe = Callable[[ModelConfig], Network]
# model.arch -> its description; optional (FLOPs and parameters of an undescribed network are unknown).
DESCRIPTIONS: Registry[Describe] = Registry("model.arch", "architecture", "network descriptions")
register_description = DESCRIPTIONS.register
unregister_description = DESCRIPTIONS.unregister


def describe(cfg: ModelConfig) -> Network | None:
    """The description of ``cfg``'s network; None when its architecture registered none."""
    found = DESCRIPTIONS.find(cfg.arch)
    return None if found is None else found(cfg)


def describe_unet(cfg: ModelConfig) -> Network:
    """The U-Net of docs/ARCHITECTURE.md, layer by layer, in its canonical names."""
    ch, depth = cfg.level_channels(), cfg.depth
    layers: list[Layer] = []

    def at(level: int) -> Fraction:
        return Fraction(1, 2**level)

    def block(prefix: str, cin: int, cout: int, level: int) -> None:
        for i, conv_in in ((1, cin), (2, cout)):
            layers.append(Layer(f"{prefix}.conv{i}", "conv", conv_in, cout, 3, scale=at(level)))
            if cfg.norm != "none":
                layers.append(Layer(f"{prefix}.norm{i}", "norm", cout, cout, scale=at(level)))
        if cfg.residual and cin != cout:
            layers.append(Layer(f"{prefix}.skip", "conv", cin, cout, 1, scale=at(level)))

    for i in range(depth):
        block(f"encoders.{i}", cfg.in_channels if i == 0 else ch[i - 1], ch[i], i)
        if cfg.downsample == "conv":
            layers.append(Layer(f"downs.{i}", "conv", ch[i], ch[i], 3, stride=2, scale=at(i + 1)))
    block("bottleneck", ch[depth - 1], ch[depth], depth)
    for i in reversed(range(depth)):
        if cfg.upsample == "transpose":
            layers.append(Layer(f"ups.{i}", "conv_transpose", ch[i + 1], ch[i], 2, stride=2, scale=at(i)))
        else:  # nearest x2, then a 3x3 conv at the finer level
            layers.append(Layer(f"ups.{i}.conv", "conv", ch[i + 1], ch[i], 3, scale=at(i)))
        block(f"decoders.{i}", 2 * ch[i], ch[i], i)
    layers.append(Layer("head", "conv", ch[0], cfg.out_channels, 1, scale=at(0)))
    return Network(cfg.dims, tuple(layers))


register_description("unet", describe_unet)
