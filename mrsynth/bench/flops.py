"""Analytic FLOP counts of the U-Net of docs/ARCHITECTURE.md, from its ModelConfig alone.

Only convolutions and transposed convolutions are counted (norms, activations, pooling,
the loss and the optimizer are a few percent at most). One multiply-add is 2 FLOPs:

    conv (kernel k, stride 1, padding k//2):   2 * N_out * C_in * C_out * k^d
    conv (k 3, stride 2) downsample:           2 * N_out * C_in * C_out * 3^d   (N_out = N_in / 2^d)
    transposed conv (k 2, stride 2):           2 * N_in  * C_in * C_out * 2^d   (= 2 * N_out * C_in * C_out)
    training step:                             3 * forward   (backward = grad wrt inputs + grad wrt weights)

with N the number of output voxels per sample times the batch. This reproduces DESIGN.md's
anchors: 9.23 TFLOP per step for the 2D 64-128-256-512-1024 U-Net (batch 32 of 256x256) and
10.7 TFLOP for the 3D 32-64-128-256 U-Net (batch 16 of 32x128x128).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from mrsynth.config import ModelConfig

FORMULA = ("train step FLOPs = 3 x forward; forward = sum over convs of 2 * N_out * C_in * C_out * k^d "
           "(transposed k2s2: 2 * N_in * C_in * C_out * 2^d); norms/activations/pooling not counted")
TRAIN_FACTOR = 3


def forward_macs_per_sample(cfg: ModelConfig, spatial: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of one sample of size ``spatial``."""
    if len(spatial) != cfg.dims:
        raise ValueError(f"spatial size {tuple(spatial)} does not match dims={cfg.dims}")
    d = cfg.dims
    ch = cfg.level_channels()
    L = cfg.depth

    def voxels(level: int) -> int:
        return math.prod(s // 2**level for s in spatial)

    def block(cin: int, cout: int, level: int) -> int:
        n = voxels(level)
        macs = n * cin * cout * 3**d + n * cout * cout * 3**d
        if cfg.residual and cin != cout:
            macs += n * cin * cout  # 1x1 skip conv
        return macs

    total = 0
    for i in range(L):
        total += block(cfg.in_channels if i == 0 else ch[i - 1], ch[i], i)
        if cfg.downsample == "conv":
            total += voxels(i + 1) * ch[i] * ch[i] * 3**d
    total += block(ch[L - 1], ch[L], L)
    for i in range(L):
        # transposed k2s2: each output voxel sees exactly one kernel tap; resize_conv: a 3^d conv
        taps = 1 if cfg.upsample == "transpose" else 3**d
        total += voxels(i) * ch[i + 1] * ch[i] * taps
        total += block(2 * ch[i], ch[i], i)
    total += voxels(0) * ch[0] * cfg.out_channels
    return total


def forward_flops(cfg: ModelConfig, spatial: Sequence[int], batch: int) -> int:
    return 2 * batch * forward_macs_per_sample(cfg, spatial)


def train_step_flops(cfg: ModelConfig, spatial: Sequence[int], batch: int) -> int:
    """FLOPs of one training step (forward + backward) on a batch of ``batch`` samples."""
    return TRAIN_FACTOR * forward_flops(cfg, spatial, batch)


def parameter_count(cfg: ModelConfig) -> int:
    """Trainable parameters (conv weights and biases, norm affines), framework-free."""
    d = cfg.dims
    ch = cfg.level_channels()
    L = cfg.depth
    norm = 0 if cfg.norm == "none" else 2

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k**d + cout

    def block(cin: int, cout: int) -> int:
        n = conv(cin, cout, 3) + conv(cout, cout, 3) + 2 * norm * cout
        if cfg.residual and cin != cout:
            n += conv(cin, cout, 1)
        return n

    total = sum(block(cfg.in_channels if i == 0 else ch[i - 1], ch[i]) for i in range(L))
    if cfg.downsample == "conv":
        total += sum(conv(ch[i], ch[i], 3) for i in range(L))
    total += block(ch[L - 1], ch[L])
    total += sum(conv(ch[i + 1], ch[i], 2 if cfg.upsample == "transpose" else 3) for i in range(L))
    total += sum(block(2 * ch[i], ch[i]) for i in range(L))
    total += conv(ch[0], cfg.out_channels, 1)
    return total
