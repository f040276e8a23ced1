"""The loss registries of both backends: the same names, the same values and terms, and a loss
registered from outside the library (here: an L1 inside the brain mask) that trains in both.

Tolerance ``loss`` (``mrsynth/parity/tolerances.py``): relative difference of a loss or term
between JAX and torch on the same float32 inputs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mrsynth.config import CHOICES, TrainConfig, config_from_dict
from mrsynth.losses import LOSS_NAMES, uses_mask
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES

from jax_impl import losses as jax_losses
from jax_impl.objectives import OBJECTIVES as JAX_OBJECTIVES
from jax_impl.train import JaxEngine
from torch_ref import losses as torch_losses
from torch_ref.objectives import OBJECTIVES as TORCH_OBJECTIVES
from torch_ref.predict import channels_first_copy
from torch_ref.train import TorchEngine

MASKED_L1 = "masked_l1_test"


@uses_mask
def jax_masked_l1(pred, batch, train):
    """Mean |pred - t2| over the voxels inside the mask."""
    value = jnp.sum(jnp.abs(pred - batch["t2"]) * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1.0)
    return value, {"masked_l1": value}


@uses_mask
def torch_masked_l1(pred, batch, train):
    value = ((pred - batch["t2"]).abs() * batch["mask"]).sum() / batch["mask"].sum().clamp_min(1.0)
    return value, {"masked_l1": value}


@pytest.fixture
def masked_l1() -> Iterator[str]:
    """The toy loss registered in both backends for one test, unregistered after."""
    jax_losses.LOSSES.register(MASKED_L1)(jax_masked_l1)
    torch_losses.LOSSES.register(MASKED_L1)(torch_masked_l1)
    try:
        yield MASKED_L1
    finally:
        jax_losses.LOSSES.unregister(MASKED_L1)
        torch_losses.LOSSES.unregister(MASKED_L1)


def random_batch(shape=(2, 16, 16, 1), seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(pred, batch) channels-last float32: a prediction near its target (SSIM well above 0, as in
    training), and a mask covering part of each image."""
    rng = np.random.default_rng(seed)
    t1, t2 = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    pred = (t2 + 0.5 * rng.standard_normal(shape)).astype(np.float32)
    mask = (rng.random(shape) < 0.4).astype(np.float32)
    return pred, {"t1": t1, "t2": t2, "mask": mask}


def both_losses(pred: np.ndarray, batch: dict[str, np.ndarray], train: TrainConfig
                ) -> tuple[dict[str, float], dict[str, float]]:
    """{"loss", *terms} as host floats from each backend's ``training_loss`` on the same inputs."""
    j_loss, j_terms = jax_losses.training_loss(jnp.asarray(pred), {k: jnp.asarray(v) for k, v in batch.items()},
                                               train)
    first = lambda a: torch.from_numpy(channels_first_copy(a))  # noqa: E731
    t_loss, t_terms = torch_losses.training_loss(first(pred), {k: first(v) for k, v in batch.items()}, train)
    return ({"loss": float(j_loss), **{k: float(v) for k, v in j_terms.items()}},
            {"loss": float(t_loss), **{k: float(v) for k, v in t_terms.items()}})


def assert_same_values(got_jax: dict[str, float], got_torch: dict[str, float]) -> None:
    assert got_jax.keys() == got_torch.keys()
    for name in got_jax:
        assert got_jax[name] == pytest.approx(got_torch[name], rel=DEFAULT_TOLERANCES["loss", "float32"]), name


def test_both_backends_register_exactly_the_named_losses_and_objectives():
    assert set(jax_losses.LOSSES.names()) == set(torch_losses.LOSSES.names()) == set(LOSS_NAMES) == set(CHOICES["train.loss"])
    assert set(JAX_OBJECTIVES.names()) == set(TORCH_OBJECTIVES.names()) == set(CHOICES["train.objective"])


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_registered_losses_and_their_terms_agree(name):
    pred, batch = random_batch()
    got_jax, got_torch = both_losses(pred, batch, TrainConfig(loss=name, ssim_weight=0.3))
    counted = batch["mask"] > 0 if name == "l1_masked" else np.ones(pred.shape, dtype=bool)
    assert got_jax["l1"] == pytest.approx(float(np.mean(np.abs(pred - batch["t2"])[counted])), rel=1e-6)
    assert_same_values(got_jax, got_torch)


def test_a_loss_registered_from_outside_uses_the_mask_and_agrees(masked_l1):
    pred, batch = random_batch(seed=1)
    got_jax, got_torch = both_losses(pred, batch, TrainConfig(loss=masked_l1))
    inside = batch["mask"] > 0
    assert got_jax["loss"] == pytest.approx(float(np.mean(np.abs(pred - batch["t2"])[inside])), rel=1e-6)
    assert_same_values(got_jax, got_torch)
    with pytest.raises(ValueError, match="already registered"):
        jax_losses.LOSSES.register(masked_l1)(jax_masked_l1)


def test_a_registered_loss_trains_in_both_engines_and_logs_its_terms(masked_l1, tmp_path):
    cfg = config_from_dict({
        "model": {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "groups": 2},
        "data": {"patch_size": [16, 16]},
        "train": {"steps": 10, "warmup_steps": 1},
    })
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss=masked_l1))  # not a shipped name
    _, batch = random_batch(shape=(4, 16, 16, 1), seed=2)
    engines = (JaxEngine(cfg, tmp_path / "jax", devices=jax.devices()[:1]), TorchEngine(cfg, tmp_path / "torch"))
    for engine in engines:
        try:
            assert set(engine.place_batch(batch)) == {"t1", "t2", "mask"}  # marked uses_mask
            (metrics,) = engine.fetch_metrics([engine.train_step(batch)])
        finally:
            engine.close()
        assert set(metrics) == {"loss", "grad_norm", "lr", "masked_l1"}
        assert metrics["masked_l1"] == metrics["loss"] and np.isfinite(metrics["loss"])


def test_l1_masked_ignores_the_background_and_its_gradients_agree():
    """Changing the prediction outside the mask changes neither backend's loss nor gets a gradient;
    inside, the gradients agree (same sign pattern / count: d|x|/dx = sign(x) / n_inside)."""
    pred, batch = random_batch(seed=3)
    train = TrainConfig(loss="l1_masked")
    outside = batch["mask"] == 0
    moved = np.where(outside, pred + 10.0, pred).astype(np.float32)
    for got in (both_losses(pred, batch, train), both_losses(moved, batch, train)):
        assert got[0]["loss"] == pytest.approx(float(np.mean(np.abs(pred - batch["t2"])[~outside])), rel=1e-6)
        assert_same_values(*got)
    jax_grad = np.asarray(jax.grad(lambda p: jax_losses.training_loss(
        p, {k: jnp.asarray(v) for k, v in batch.items()}, train)[0])(jnp.asarray(pred)))
    first = lambda a: torch.from_numpy(channels_first_copy(a))  # noqa: E731
    torch_pred = first(pred).requires_grad_(True)
    torch_losses.training_loss(torch_pred, {k: first(v) for k, v in batch.items()}, train)[0].backward()
    expected = np.where(outside, 0.0, np.sign(pred - batch["t2"]) / (~outside).sum())
    np.testing.assert_allclose(jax_grad, expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(np.moveaxis(torch_pred.grad.numpy(), 1, -1), expected, rtol=1e-6, atol=0)


def test_the_mask_goes_to_the_device_only_for_a_loss_that_uses_it(tmp_path):
    """l1 and l1_ssim do not read the mask, so neither engine places it (no transfer per step);
    l1_masked does."""
    _, batch = random_batch(shape=(2, 16, 16, 1))
    for loss, placed in (("l1_ssim", {"t1", "t2"}), ("l1_masked", {"t1", "t2", "mask"})):
        cfg = config_from_dict({"model": {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "groups": 2},
                                "data": {"patch_size": [16, 16]}, "train": {"loss": loss}})
        for engine in (JaxEngine(cfg, tmp_path / f"jax_{loss}", devices=jax.devices()[:1]),
                       TorchEngine(cfg, tmp_path / f"torch_{loss}")):
            try:
                assert set(engine.place_batch(batch)) == placed
            finally:
                engine.close()
