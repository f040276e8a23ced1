"""The PatchGAN discriminator and the adversarial losses agree between JAX and PyTorch.

Weights are copied torch -> JAX by the portable name/layout rules; inputs are (T1 channels, T2)
stacked on the channel axis. Tolerances from ``mrsynth/parity/tolerances.py``: forward float32
``forward`` (relative L2), gradients w.r.t. the input and every parameter ``grad``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from mrsynth.config import DiscriminatorConfig
from mrsynth.parity.metrics import rel_l2
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES

from jax_impl import discriminator as jax_disc
from jax_impl.weights import canonical_name, load_torch_into
from parity_tests.checks.precision import from_torch, to_torch
from torch_ref import discriminator as torch_disc

CASES = {
    "2d-instance": (DiscriminatorConfig(base_channels=4, layers=3, norm="instance"), 2, (2, 32, 32, 3)),
    "2d-none-2layers": (DiscriminatorConfig(base_channels=4, layers=2, norm="none"), 2, (2, 24, 16, 2)),
    "3d-instance": (DiscriminatorConfig(base_channels=2, layers=2, norm="instance"), 3, (1, 16, 16, 16, 2)),
}


def _pair(name: str):
    cfg, dims, shape = CASES[name]
    reference = torch_disc.build_discriminator(cfg, dims, shape[-1], seed=1)
    model = jax_disc.build_discriminator(cfg, dims, shape[-1], seed=2)
    load_torch_into(model, {k: v.detach().numpy() for k, v in reference.state_dict().items()}, "torch")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return reference, model, x


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_gradients_match(name):
    reference, model, x = _pair(name)
    xt = to_torch(x, "float32").requires_grad_(True)
    out_t = reference(xt)
    (out_t.square().mean()).backward()
    grads, grad_x = nnx.grad(lambda m, xj: jnp.square(m(xj)).mean(), argnums=(0, 1))(model, jnp.asarray(x))
    logits = model(jnp.asarray(x))
    assert rel_l2(np.asarray(logits, np.float64), from_torch(out_t)) <= DEFAULT_TOLERANCES["forward", "float32"]
    assert rel_l2(np.asarray(grad_x, np.float64), from_torch(xt.grad)) <= DEFAULT_TOLERANCES["grad", "float32"]
    torch_grads = {k: p.grad.numpy() for k, p in reference.named_parameters()}
    jax_grads = {}
    for path, value in nnx.to_flat_state(grads):
        value = np.asarray(value.get_value() if isinstance(value, nnx.Variable) else value, np.float64)
        if path[-1] == "kernel":
            value = np.transpose(value, (value.ndim - 1, value.ndim - 2, *range(value.ndim - 2)))
        jax_grads[canonical_name(tuple(path))] = value
    # A conv bias feeding an instance norm gets an exactly-zero gradient in exact arithmetic:
    # compared like the U-Net's inert biases, as a fraction of the whole gradient ("grad_inert").
    inert = {f"blocks.{i}.conv.bias" for i, b in enumerate(reference.blocks) if b.norm is not None}
    total = np.sqrt(sum(float(np.sum(g**2)) for g in torch_grads.values()))
    for name, value in jax_grads.items():
        if name in inert:
            assert np.linalg.norm(value) / total <= DEFAULT_TOLERANCES["grad_inert", "float32"], name
            assert np.linalg.norm(torch_grads[name]) / total <= DEFAULT_TOLERANCES["grad_inert", "float32"], name
        else:
            assert rel_l2(value, torch_grads[name]) <= DEFAULT_TOLERANCES["grad", "float32"], name


def test_patch_grid_of_the_default_discriminator():
    """pix2pix's 70x70 PatchGAN: a 128x128 slice is scored on a 14x14 grid of patches."""
    model = torch_disc.build_discriminator(DiscriminatorConfig(base_channels=2), 2, 2)
    assert tuple(model(torch.zeros(1, 2, 128, 128)).shape) == (1, 1, 14, 14)


@pytest.mark.parametrize("kind", ["lsgan", "nonsaturating"])
def test_adversarial_losses_match(kind):
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((2, 4, 5, 5, 1)).astype(np.float32)
    d_j = jax_disc.discriminator_loss(jnp.asarray(real), jnp.asarray(fake), kind)
    g_j = jax_disc.generator_adversarial_loss(jnp.asarray(fake), kind)
    d_t = torch_disc.discriminator_loss(torch.from_numpy(real), torch.from_numpy(fake), kind)
    g_t = torch_disc.generator_adversarial_loss(torch.from_numpy(fake), kind)
    assert float(d_j) == pytest.approx(float(d_t), rel=1e-6)
    assert float(g_j) == pytest.approx(float(g_t), rel=1e-6)
    real_score, fake_score = (1.0, 0.0) if kind == "lsgan" else (30.0, -30.0)  # a perfect discriminator
    assert float(jax_disc.discriminator_loss(jnp.full(3, real_score), jnp.full(3, fake_score), kind)) < 1e-10
    assert float(jax_disc.generator_adversarial_loss(jnp.full(3, fake_score), kind)) > 0.9
