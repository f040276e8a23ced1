"""Training objectives (``train.objective``): which models a run trains, one optax optimizer
each, and the pure step function that updates them.

An :class:`Objective` is three builders. The engine (``jax_impl/train.py``) calls them and
stays the same for every objective: it places the state and batches, compiles the step,
checkpoints the state (keyed by model name) and serves the ``generator`` as the predictor.
``supervised``, today's only objective: the generator U-Net, AdamW, and the registered loss
(``train.loss``) of its prediction. An adversarial objective registers here with models
``{"generator", "discriminator"}``, an optimizer for each, and a step that updates both
(reusing :func:`dropout_keys`, :func:`make_optimizer` and the loss registry); its mirror goes into
``torch_ref/objectives.py`` and its name into ``mrsynth.config.CHOICES["train.objective"]``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mrsynth.backend import GENERATOR
from mrsynth.config import Config, TrainConfig
from mrsynth.precision import get_precision
from mrsynth.registry import Registry
from mrsynth.schedule import warmup_cosine

from jax_impl.losses import training_loss
from jax_impl.model import build_model
from jax_impl.train_state import TrainState, batch_stats_of, merge_model

Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, Metrics]]
Optimizers = dict[str, optax.GradientTransformation]


@dataclass(frozen=True)
class Objective:
    # Fresh models by name (``axis_name``: pmap's axis, for BatchNorm statistics across devices).
    models: Callable[[Config, str | None], dict[str, nnx.Module]]
    # One optimizer per trained model, under the model's name.
    optimizers: Callable[[TrainConfig], Optimizers]
    # (graphdefs, optimizers, train, axis_name) -> step. With ``axis_name`` (pmap) the step sees
    # one device's slice of the batch and averages across devices; without, the global batch.
    # Its metrics always hold "loss", "grad_norm" and "lr", plus what the objective adds.
    make_step: Callable[[dict[str, nnx.GraphDef], Optimizers, TrainConfig, str | None], StepFn]


OBJECTIVES: Registry[Objective] = Registry("train.objective", "objective", "jax backend")


def lr_schedule(train: TrainConfig) -> Callable[[jax.Array], jax.Array]:
    """The shared warmup-cosine formula, evaluated by optax on its update count."""
    return lambda count: warmup_cosine(count, train.lr, train.warmup_steps, train.steps,
                                       train.end_lr_factor, xp=jnp)


def decay_mask(params: Any) -> Any:
    """Weight decay only on conv / conv-transpose kernels (ndim >= 3), never biases or norms."""
    return jax.tree.map(lambda p: p.ndim >= 3, params)


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the shared schedule and the decay mask."""
    return optax.chain(
        optax.clip_by_global_norm(train.clip_norm),
        optax.adamw(lr_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                    weight_decay=train.weight_decay, mask=decay_mask),
    )


def dropout_keys(state: TrainState, local_batch: int, axis_name: str | None) -> jax.Array:
    """Per-sample dropout keys from (key, step, global sample index): identical masks on any
    number of devices, and a resumed run redraws exactly the same ones."""
    index = jnp.arange(local_batch)
    if axis_name is not None:
        index = index + jax.lax.axis_index(axis_name) * local_batch
    step_key = jax.random.fold_in(state["key"], state["step"])
    return jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)


def generator_model(cfg: Config, axis_name: str | None) -> nnx.Module:
    """The U-Net being trained, in the run's compute dtype and 3D conv formulation."""
    dtype = get_precision(cfg.train.precision).activations
    return build_model(cfg.model, seed=cfg.train.seed, compute_dtype=dtype, axis_name=axis_name,
                       conv3d=cfg.train.jax_conv3d)


def make_supervised_step(graphdefs: dict[str, nnx.GraphDef], txs: Optimizers, train: TrainConfig,
                         axis_name: str | None = None) -> StepFn:
    """One AdamW update of the generator on the registered loss of its prediction."""
    schedule = lr_schedule(train)
    graphdef, tx = graphdefs[GENERATOR], txs[GENERATOR]

    def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Metrics]:
        sample_keys = dropout_keys(state, batch["t1"].shape[0], axis_name)
        generator = state["models"][GENERATOR]

        def loss_fn(params):
            model = merge_model(graphdef, {"params": params, "batch_stats": generator["batch_stats"]})
            loss, terms = training_loss(model(batch["t1"], sample_keys), batch, train)
            return loss, (terms, batch_stats_of(model))

        (loss, (terms, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(generator["params"])
        if axis_name is not None:
            grads, loss, terms = jax.lax.pmean((grads, loss, terms), axis_name)
        updates, opt_state = tx.update(grads, state["opt_states"][GENERATOR], generator["params"])
        new_state = {
            "models": {GENERATOR: {"params": optax.apply_updates(generator["params"], updates),
                                   "batch_stats": stats}},
            "opt_states": {GENERATOR: opt_state},
            "step": state["step"] + 1,
            "key": state["key"],
        }
        metrics = {**terms, "loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"])}
        return new_state, metrics

    return train_step


OBJECTIVES.register("supervised")(Objective(
    models=lambda cfg, axis_name: {GENERATOR: generator_model(cfg, axis_name)},
    optimizers=lambda train: {GENERATOR: make_optimizer(train)},
    make_step=make_supervised_step,
))
