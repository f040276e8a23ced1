"""A second architecture, registered from this test module alone, is built from ``model.arch``
and computes the same function in both backends.

The toy network (conv 3x3 -> ReLU -> conv 3x3, plus a 1x1 residual conv of the input) registers
a JAX builder, a torch builder and a framework-free description; no library file names it.
The checks are the U-Net's (the ``parity_tests/checks/`` package) with the tolerances of
``mrsynth/parity/tolerances.py``: forward rel L2 <= 1e-5 (float32) / 1e-12 (float64), gradients
w.r.t. the input and every parameter rel L2 <= 1e-4 (float32) / 1e-10 (float64), portable
round trips bit-exact (0), and both backends' predictors on one weight file <= 1e-5 (forward float32).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import pytest
import torch
from flax import nnx
from torch import nn

from mrsynth import architecture
from mrsynth.architecture import Layer, Network
from mrsynth.config import ModelConfig, config_from_dict
from mrsynth.parity.metrics import rel_l2
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES

from jax_impl import layers as jax_layers
from jax_impl import model as jax_model
from jax_impl.backend import JaxBackend
from torch_ref import layers as torch_layers
from torch_ref import model as torch_model
from torch_ref.backend import TorchBackend

from parity_tests import checks
from parity_tests.test_forward_gradients import TRAIN, assert_rows, batch_for

TOY = "toy_residual"


class JaxToyNet(nnx.Module):
    """conv1 (3x3) -> ReLU -> conv2 (3x3), plus skip (1x1) of the input; channels-last."""

    def __init__(self, cfg: ModelConfig, *, compute_dtype: jnp.dtype, axis_name: str | None,
                 rngs: nnx.Rngs) -> None:
        width, dims, conv3d = cfg.base_channels, cfg.dims, cfg.conv3d
        self.conv1 = jax_layers.conv(dims, cfg.in_channels, width, 3, dtype=compute_dtype, rngs=rngs, conv3d=conv3d)
        self.conv2 = jax_layers.conv(dims, width, cfg.out_channels, 3, dtype=compute_dtype, rngs=rngs, conv3d=conv3d)
        self.skip = jax_layers.conv(dims, cfg.in_channels, cfg.out_channels, 1, dtype=compute_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, sample_keys: jax.Array | None = None) -> jax.Array:
        y = self.conv2(jax.nn.relu(self.conv1(x))) + self.skip(x)
        return y.astype(jnp.promote_types(y.dtype, jnp.float32))


class TorchToyNet(nn.Module):
    """The torch twin of :class:`JaxToyNet`; its attribute names are the canonical weight names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        conv = torch_layers.conv_class(cfg.dims)
        self.conv1 = conv(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.conv2 = conv(cfg.base_channels, cfg.out_channels, 3, padding=1)
        self.skip = conv(cfg.in_channels, cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(x))) + self.skip(x)
        return y.to(torch.promote_types(y.dtype, torch.float32))


def describe_toy(cfg: ModelConfig) -> Network:
    width = cfg.base_channels
    return Network(cfg.dims, (Layer("conv1", "conv", cfg.in_channels, width, 3),
                              Layer("conv2", "conv", width, cfg.out_channels, 3),
                              Layer("skip", "conv", cfg.in_channels, cfg.out_channels, 1)))


REGISTRIES = (
    (jax_model.register_architecture, jax_model.unregister_architecture, JaxToyNet),
    (torch_model.register_architecture, torch_model.unregister_architecture, TorchToyNet),
    (architecture.register_description, architecture.unregister_description, describe_toy),
)


@contextlib.contextmanager
def toy_registered() -> Iterator[None]:
    """The toy in both backends and the description registry, for the duration of the block."""
    registered = []
    try:
        for register, unregister, entry in REGISTRIES:
            register(TOY, entry)
            registered.append(unregister)
        yield
    finally:
        for unregister in registered:
            unregister(TOY)


@pytest.fixture
def toy() -> Iterator[None]:
    with toy_registered():
        yield


def toy_config(dims: int) -> ModelConfig:
    """The toy's model config as a user writes it: ``model.arch`` in a config mapping."""
    return config_from_dict({
        "model": {"arch": TOY, "dims": dims, "base_channels": 4, "norm": "none"},
        "data": {"patch_size": [16] * dims},
    }).model


@pytest.mark.parametrize("direction", checks.DIRECTIONS)
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("dims", [2, 3])
def test_registered_architecture_forward_and_gradients_agree(toy, dims, precision, direction, tmp_path):
    cfg = toy_config(dims)
    pair = checks.transfer_pair(cfg, direction, tmp_path)
    assert isinstance(pair.jax_model, JaxToyNet) and isinstance(pair.torch_model, TorchToyNet)
    rows = checks.train_mode_check(pair, batch_for(cfg), TRAIN, precision)
    assert {r.check for r in rows} >= {"forward", "grad"}
    assert_rows(rows)


@pytest.mark.parametrize("direction", checks.DIRECTIONS)
@pytest.mark.parametrize("dims", [2, 3])
def test_registered_architecture_weights_cross_frameworks(toy, dims, direction, tmp_path):
    """Saved by one framework, loaded by the other: bit-exact back, and the same predictions."""
    cfg = toy_config(dims)
    pair = checks.transfer_pair(cfg, direction, tmp_path)
    x = batch_for(cfg)["t1"]
    with checks.precision_context("float32"):
        jax_out = JaxBackend().load_predictor(pair.weight_file)(x)
        torch_out = TorchBackend().load_predictor(pair.weight_file)(x)
    assert_rows([checks.round_trip_check(pair, tmp_path),
                 CheckResult("forward", f"{direction} predictors on one weight file", "rel_l2(output)",
                             rel_l2(jax_out, torch_out), DEFAULT_TOLERANCES["forward", "float32"])])


@pytest.mark.parametrize("dims", [2, 3])
def test_registered_description_counts_both_models_parameters(toy, dims):
    cfg = toy_config(dims)
    jax_params = nnx.state(nnx.eval_shape(lambda: jax_model.build_model(cfg)), nnx.Param)
    torch_params = torch_model.build_model(cfg).parameters()
    expected = architecture.describe(cfg).parameter_count()
    assert expected == sum(x.size for x in jax.tree.leaves(jax_params)) == sum(p.numel() for p in torch_params)


def test_registration_ends_with_its_block():
    with toy_registered():
        assert architecture.describe(toy_config(2)) is not None
    for registry in (jax_model.ARCHITECTURES, torch_model.ARCHITECTURES, architecture.DESCRIPTIONS):
        assert registry.find(TOY) is None
