"""One pix2pix step (discriminator update, then generator update) agrees between JAX and PyTorch.

Both frameworks start from the same generator and discriminator weights (torch's, copied by the
portable name/layout rules) and take one step of ``train.objective: pix2pix`` on the same batch,
through each backend's own objective: the JAX jitted step, the torch engine's ``train_step``.
Tolerances from ``mrsynth/parity/tolerances.py`` (float32): the losses ``loss``, the gradient
norms ``grad_norm``, both models' parameters after the update ``adamw_params`` (the
discriminator's conv biases before instance norms apart: their gradient is zero up to rounding).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrsynth.backend import DISCRIMINATOR, GENERATOR
from mrsynth.config import Config, DataConfig, DiscriminatorConfig, ModelConfig, TrainConfig
from mrsynth.parity.metrics import worst_rel_l2
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES

from jax_impl.objectives import OBJECTIVES as JAX_OBJECTIVES
from jax_impl.train_state import init_train_state, merge_model
from jax_impl.weights import load_torch_into, model_to_torch
from parity_tests.checks.pairs import torch_tensors
from parity_tests.checks.precision import precision_context
from torch_ref.train import TorchEngine

MODELS = (GENERATOR, DISCRIMINATOR)


def _config(loss: str) -> Config:
    return Config(
        data=DataConfig(patch_size=(32, 32)),
        model=ModelConfig(dims=2, depth=1, base_channels=4, channel_mults=(1, 2), groups=2, activation="silu"),
        train=TrainConfig(steps=10, batch_size=2, warmup_steps=2, objective="pix2pix", adv_weight=0.5,
                          clip_norm=1.0),
        discriminator=DiscriminatorConfig(base_channels=4, layers=2, loss=loss),
    )


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t1 = rng.standard_normal((2, 32, 32, 1)).astype(np.float32)
    return {"t1": t1, "t2": (0.7 * t1 + 0.3 * rng.standard_normal(t1.shape)).astype(np.float32),
            "mask": np.ones_like(t1)}


@pytest.mark.parametrize("loss", ["lsgan", "nonsaturating"])
def test_one_pix2pix_step_matches(loss, tmp_path):
    cfg, batch = _config(loss), _batch()
    with precision_context("float32"):
        engine = TorchEngine(cfg, tmp_path / "torch-run")
        try:
            initial = {name: torch_tensors(engine.models[name]) for name in MODELS}
            objective = JAX_OBJECTIVES.lookup("pix2pix")
            models = objective.models(cfg, None)
            for name in MODELS:
                load_torch_into(models[name], initial[name], f"torch {name}")
            txs = objective.optimizers(cfg)
            graphdefs, state = init_train_state(models, txs, cfg.train.seed)
            state, jax_metrics = jax.jit(objective.make_step(graphdefs, txs, cfg, None))(
                state, {k: jnp.asarray(v) for k, v in batch.items()})
            torch_metrics = engine.fetch_metrics([engine.train_step(batch)])[0]
            after = {name: (model_to_torch(merge_model(graphdefs[name], state["models"][name])),
                            torch_tensors(engine.models[name])) for name in MODELS}
        finally:
            engine.close()
    jax_metrics = {k: float(v) for k, v in jax.device_get(jax_metrics).items()}
    assert set(jax_metrics) == set(torch_metrics) >= {"loss", "adv", "l1", "d_loss", "grad_norm", "d_grad_norm"}
    for key in ("loss", "adv", "l1", "d_loss"):
        assert jax_metrics[key] == pytest.approx(torch_metrics[key], rel=DEFAULT_TOLERANCES["loss", "float32"]), key
    for key in ("grad_norm", "d_grad_norm"):
        assert jax_metrics[key] == pytest.approx(torch_metrics[key], rel=DEFAULT_TOLERANCES["grad_norm", "float32"]), key
    # A conv bias feeding an instance norm has an exactly-zero gradient, so AdamW turns rounding
    # noise into a full +-lr step there (as for the U-Net's inert biases): compared apart, not at all.
    inert = {f"blocks.{i}.conv.bias" for i in range(1, cfg.discriminator.layers + 1)}
    for name, (jax_tensors, torch_after) in after.items():
        assert any(not np.array_equal(torch_after[k], initial[name][k]) for k in initial[name]), f"{name} did not move"
        kept = [k for k in torch_after if not (name == DISCRIMINATOR and k in inert)]
        error, worst = worst_rel_l2({k: np.asarray(jax_tensors[k], np.float64) for k in kept},
                                    {k: torch_after[k] for k in kept})
        assert error <= DEFAULT_TOLERANCES["adamw_params", "float32"], (name, worst, error)
