"""Forward outputs and gradients agree for every architecture option, weights copied both ways.

Tolerances (``mrsynth/parity/tolerances.py``, where each value's source is written down):
forward float32 <= 1e-5 and float64 <= 1e-12 relative L2; gradients w.r.t. the input and
every parameter float64 <= 1e-10; float32 gradients are compared with each other and with the
float64 reference (DESIGN.md: a ReLU pre-activation near zero may flip between frameworks).

The option values are covered by a compact design instead of the full product (384 models):
per dimensionality, four models in which every norm, upsampling, downsampling, residual,
activation and dropout value occurs at least once, and a 2.5D input (5 T1 channels).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mrsynth.config import CHOICES, ModelConfig, TrainConfig
from mrsynth.parity.report import CheckResult

from parity_tests import checks

BASE = ModelConfig(dims=2, depth=1, base_channels=4, channel_mults=(1, 2), groups=2)
DEEP = dict(depth=2, channel_mults=(1, 2, 4))
COVERING = {
    "2d-group-transpose-maxpool-relu-deep": dict(dims=2, norm="group", upsample="transpose",
                                                 downsample="maxpool", activation="relu", **DEEP),
    "2d-batch-resize-conv-residual-leaky-dropout": dict(dims=2, norm="batch", upsample="resize_conv",
                                                        downsample="conv", residual=True,
                                                        activation="leaky_relu", dropout=0.2),
    "2d-instance-transpose-conv-residual-silu": dict(dims=2, norm="instance", upsample="transpose",
                                                     downsample="conv", residual=True, activation="silu"),
    "2d-none-resize-maxpool-relu-dropout": dict(dims=2, norm="none", upsample="resize_conv",
                                                downsample="maxpool", activation="relu", dropout=0.2),
    "2d-group-transpose-maxpool-relu-context2": dict(dims=2, norm="group", upsample="transpose",  # 2.5D
                                                     downsample="maxpool", activation="relu", in_channels=5),
    "3d-group-resize-conv-residual-silu": dict(dims=3, norm="group", upsample="resize_conv",
                                               downsample="conv", residual=True, activation="silu"),
    "3d-batch-transpose-maxpool-relu-deep": dict(dims=3, norm="batch", upsample="transpose",
                                                 downsample="maxpool", activation="relu", **DEEP),
    "3d-instance-resize-maxpool-leaky-dropout": dict(dims=3, norm="instance", upsample="resize_conv",
                                                     downsample="maxpool", activation="leaky_relu",
                                                     dropout=0.2),
    "3d-none-transpose-conv-residual-relu": dict(dims=3, norm="none", upsample="transpose",
                                                 downsample="conv", residual=True, activation="relu"),
}
TRAIN = TrainConfig(loss="l1")


def model_config(name: str) -> ModelConfig:
    return replace(BASE, **COVERING[name])


def batch_for(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random normalized-intensity batch of 2: 16x16 slices (2D) or 8^3 patches (3D)."""
    rng = np.random.default_rng(seed)
    shape = (2, 16, 16) if cfg.dims == 2 else (2, 8, 8, 8)
    return {"t1": rng.standard_normal((*shape, cfg.in_channels)).astype(np.float32),
            "t2": rng.standard_normal((*shape, 1)).astype(np.float32)}


def assert_rows(rows: list[CheckResult]) -> None:
    failed = [r.describe() for r in rows if not r.passed]
    assert not failed, "\n".join(failed)


def test_covering_design_has_every_option_value_in_2d_and_3d():
    for dims in (2, 3):
        models = [model_config(n) for n in COVERING if model_config(n).dims == dims]
        for option in ("norm", "upsample", "downsample", "activation"):
            assert {getattr(m, option) for m in models} == set(CHOICES[f"model.{option}"]), (dims, option)
        assert {m.residual for m in models} == {True, False}
        assert {m.dropout > 0 for m in models} == {True, False}


@pytest.mark.parametrize("direction", checks.DIRECTIONS)
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(COVERING))
def test_forward_and_gradients_agree(name, precision, direction, tmp_path):
    cfg = model_config(name)
    pair = checks.transfer_pair(cfg, direction, tmp_path)
    batch = batch_for(cfg)
    rows = checks.train_mode_check(pair, batch, TRAIN, precision)
    if cfg.norm == "batch" or cfg.dropout > 0:  # eval mode differs from train mode only here
        rows.append(checks.eval_mode_check(pair, batch["t1"], precision))
    assert {r.check for r in rows} >= {"forward", "grad"}
    assert_rows(rows)


def test_l1_ssim_gradients_agree(tmp_path):
    """The SSIM term of the loss (separable Gaussian, 'valid') differentiates the same way."""
    cfg = model_config("2d-group-transpose-maxpool-relu-deep")
    pair = checks.transfer_pair(cfg, "torch->jax", tmp_path)
    batch = batch_for(cfg, seed=1)
    assert_rows(checks.train_mode_check(pair, batch, TrainConfig(loss="l1_ssim", ssim_weight=0.5), "float32"))


def test_bfloat16_compute_agrees_within_bfloat16_tolerance(tmp_path):
    """JAX compute dtype bfloat16 vs torch autocast bfloat16 (tolerances for 8-bit mantissas)."""
    cfg = model_config("2d-group-transpose-maxpool-relu-deep")
    pair = checks.transfer_pair(cfg, "jax->torch", tmp_path)
    assert_rows(checks.train_mode_check(pair, batch_for(cfg), TRAIN, "bfloat16"))


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("conv3d", ["stacked2d", "native"])
def test_both_3d_conv_formulations_agree_with_torch(conv3d, precision, tmp_path):
    """model.conv3d (JAX only) computes the same function: 3x3x3 convs, transposed and resize-conv up."""
    for name in ("3d-batch-transpose-maxpool-relu-deep", "3d-group-resize-conv-residual-silu"):
        cfg = replace(model_config(name), conv3d=conv3d)
        pair = checks.transfer_pair(cfg, "torch->jax", tmp_path / name)
        stacked = type(pair.jax_model.encoders[0].conv1).__name__ == "DepthStackedConv3d"
        assert stacked == (conv3d == "stacked2d")  # the weight file carries model.conv3d
        assert_rows(checks.train_mode_check(pair, batch_for(cfg), TRAIN, precision))
