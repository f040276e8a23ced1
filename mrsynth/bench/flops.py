"""Analytic FLOP counts of a network, from its framework-free description (:mod:`mrsynth.architecture`).

Only convolutions and transposed convolutions are counted (norms, activations, pooling,
the loss and the optimizer are a few percent at most). One multiply-add is 2 FLOPs:

    conv (kernel k, any stride):               2 * N_out * C_in * C_out * k^d
    transposed conv (kernel k, stride s):      2 * N_in  * C_in * C_out * k^d   (N_in = N_out / s^d)
    training step:                             3 * forward   (backward = grad wrt inputs + grad wrt weights)

with N the number of output (input) voxels per sample times the batch. For the U-Net this
reproduces DESIGN.md's anchors: 9.23 TFLOP per step for the 2D 64-128-256-512-1024 U-Net (batch
32 of 256x256) and 10.7 TFLOP for the 3D 32-64-128-256 U-Net (batch 16 of 32x128x128).
"""
from __future__ import annotations

from collections.abc import Sequence

from mrsynth.architecture import Layer, Network

FORMULA = ("train step FLOPs = 3 x forward; forward = sum over convs of 2 * N_out * C_in * C_out * k^d "
           "(transposed: 2 * N_in * C_in * C_out * k^d); norms/activations/pooling not counted")
TRAIN_FACTOR = 3


def _layer_macs(net: Network, layer: Layer, spatial: tuple[int, ...]) -> int:
    taps = layer.cin * layer.cout * layer.kernel**net.dims
    if layer.op == "conv":
        return net.output_voxels(layer, spatial) * taps
    if layer.op == "conv_transpose":
        return net.output_voxels(layer, spatial) // layer.stride**net.dims * taps
    return 0


def forward_macs_per_sample(net: Network, spatial: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of one sample of size ``spatial``."""
    return sum(_layer_macs(net, layer, tuple(spatial)) for layer in net.layers)


def forward_flops(net: Network, spatial: Sequence[int], batch: int) -> int:
    return 2 * batch * forward_macs_per_sample(net, spatial)


def train_step_flops(net: Network, spatial: Sequence[int], batch: int) -> int:
    """FLOPs of one training step (forward + backward) on a batch of ``batch`` samples."""
    return TRAIN_FACTOR * forward_flops(net, spatial, batch)
