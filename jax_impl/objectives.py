"""Training objectives (``train.objective``): which models a run trains, one optax optimizer
each, and the pure step function that updates them.

An :class:`Objective` is three builders. The engine (``jax_impl/train.py``) calls them and
stays the same for every objective: it places the state and batches, compiles the step,
checkpoints the state (keyed by model name) and serves the ``generator`` as the predictor.
``supervised``: the generator U-Net, AdamW, and the registered loss (``train.loss``) of its
prediction. ``pix2pix``: the same generator and a conditional PatchGAN ``discriminator``
(``jax_impl/discriminator.py``) with its own AdamW; per step the discriminator is updated on
real and synthesized (T1, T2) pairs, then the generator on its loss + ``train.adv_weight`` x
the adversarial term against the updated discriminator (the order of pix2pix's reference
code). Each has its mirror in ``torch_ref/objectives.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mrsynth.backend import DISCRIMINATOR, GENERATOR
from mrsynth.config import Config, TrainConfig
from mrsynth.precision import get_precision
from mrsynth.registry import Registry
from mrsynth.schedule import warmup_cosine
from mrsynth.weights import initial_tensors

from jax_impl.discriminator import build_discriminator, discriminator_loss, generator_adversarial_loss
from jax_impl.losses import training_loss
from jax_impl.model import build_model
from jax_impl.train_state import TrainState, batch_stats_of, merge_model
from jax_impl.weights import load_torch_into

Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, Metrics]]
Optimizers = dict[str, optax.GradientTransformation]


@dataclass(frozen=True)
class Objective:
    # Fresh models by name (``axis_name``: pmap's axis, for BatchNorm statistics across devices).
    models: Callable[[Config, str | None], dict[str, nnx.Module]]
    # One optimizer per trained model, under the model's name.
    optimizers: Callable[[Config], Optimizers]
    # (graphdefs, optimizers, config, axis_name) -> step. With ``axis_name`` (pmap) the step sees
    # one device's slice of the batch and averages across devices; without, the global batch.
    # Its metrics always hold "loss", "grad_norm" and "lr", plus what the objective adds.
    make_step: Callable[[dict[str, nnx.GraphDef], Optimizers, Config, str | None], StepFn]
    # Whether the step reads batch["mask"] beyond its loss (the engine places the mask only then).
    uses_mask: bool = False


OBJECTIVES: Registry[Objective] = Registry("train.objective", "objective", "jax backend")


def lr_schedule(train: TrainConfig, peak_lr: float | None = None) -> Callable[[jax.Array], jax.Array]:
    """The shared warmup-cosine formula, evaluated by optax on its update count (peak
    ``train.lr``, or ``peak_lr`` for the discriminator's optimizer)."""
    peak = train.lr if peak_lr is None else peak_lr
    return lambda count: warmup_cosine(count, peak, train.warmup_steps, train.steps,
                                       train.end_lr_factor, xp=jnp)


def decay_mask(params: Any) -> Any:
    """Weight decay only on conv / conv-transpose kernels (ndim >= 3), never biases or norms."""
    return jax.tree.map(lambda p: p.ndim >= 3, params)


def make_optimizer(train: TrainConfig, peak_lr: float | None = None, betas: tuple[float, float] | None = None
                   ) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the shared schedule and the decay mask (the
    generator's lr and betas from ``train`` unless given: the discriminator's)."""
    b1, b2 = betas or (train.b1, train.b2)
    return optax.chain(
        optax.clip_by_global_norm(train.clip_norm),
        optax.adamw(lr_schedule(train, peak_lr), b1=b1, b2=b2, eps=train.eps,
                    weight_decay=train.weight_decay, mask=decay_mask),
    )


def discriminator_optimizer(cfg: Config) -> optax.GradientTransformation:
    """The discriminator's AdamW: its own peak lr and betas, the run's schedule, clipping, decay."""
    d = cfg.discriminator
    return make_optimizer(cfg.train, d.lr, (d.b1, d.b2))


def dropout_keys(state: TrainState, local_batch: int, axis_name: str | None) -> jax.Array:
    """Per-sample dropout keys from (key, step, global sample index): identical masks on any
    number of devices, and a resumed run redraws exactly the same ones."""
    index = jnp.arange(local_batch)
    if axis_name is not None:
        index = index + jax.lax.axis_index(axis_name) * local_batch
    step_key = jax.random.fold_in(state["key"], state["step"])
    return jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)


def generator_model(cfg: Config, axis_name: str | None) -> nnx.Module:
    """The U-Net being trained, in the run's compute dtype, from ``train.seed`` or ``train.init_weights``."""
    dtype = get_precision(cfg.train.precision).activations
    model = build_model(cfg.model, seed=cfg.train.seed, compute_dtype=dtype, axis_name=axis_name)
    if (tensors := initial_tensors(cfg)) is not None:
        load_torch_into(model, tensors, cfg.train.init_weights)
    return model


def make_supervised_step(graphdefs: dict[str, nnx.GraphDef], txs: Optimizers, cfg: Config,
                         axis_name: str | None = None) -> StepFn:
    """One AdamW update of the generator on the registered loss of its prediction."""
    train = cfg.train
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


def discriminator_model(cfg: Config, axis_name: str | None) -> nnx.Module:
    """The PatchGAN, seeing the T1 channels and a T2, in the run's compute dtype."""
    dtype = get_precision(cfg.train.precision).activations
    return build_discriminator(cfg.discriminator, cfg.model.dims, cfg.model.in_channels + 1,
                               seed=cfg.train.seed + 1, compute_dtype=dtype)


def make_pix2pix_step(graphdefs: dict[str, nnx.GraphDef], txs: Optimizers, cfg: Config,
                      axis_name: str | None = None) -> StepFn:
    """One discriminator update, then one generator update against the updated discriminator.

    The generator runs forward once; its gradient is the VJP of that forward at the gradient
    of (registered loss + adv_weight x adversarial term) with respect to the synthesized T2.
    """
    train, kind, weight = cfg.train, cfg.discriminator.loss, cfg.train.adv_weight
    schedule = lr_schedule(train)
    g_def, d_def = graphdefs[GENERATOR], graphdefs[DISCRIMINATOR]

    def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Metrics]:
        sample_keys = dropout_keys(state, batch["t1"].shape[0], axis_name)
        generator, critic_vars = state["models"][GENERATOR], state["models"][DISCRIMINATOR]

        def synthesize(params):
            model = merge_model(g_def, {"params": params, "batch_stats": generator["batch_stats"]})
            return model(batch["t1"], sample_keys), batch_stats_of(model)

        def critic(params, t2: jax.Array) -> jax.Array:
            model = merge_model(d_def, {"params": params, "batch_stats": critic_vars["batch_stats"]})
            return model(jnp.concatenate([batch["t1"], t2.astype(batch["t1"].dtype)], axis=-1))

        fake, generator_vjp, stats = jax.vjp(synthesize, generator["params"], has_aux=True)
        d_loss, d_grads = jax.value_and_grad(
            lambda p: discriminator_loss(critic(p, batch["t2"]), critic(p, jax.lax.stop_gradient(fake)), kind)
        )(critic_vars["params"])
        if axis_name is not None:
            d_grads, d_loss = jax.lax.pmean((d_grads, d_loss), axis_name)
        d_updates, d_opt_state = txs[DISCRIMINATOR].update(d_grads, state["opt_states"][DISCRIMINATOR],
                                                           critic_vars["params"])
        d_params = optax.apply_updates(critic_vars["params"], d_updates)

        def generator_loss(pred):
            loss, terms = training_loss(pred, batch, train)
            adversarial = generator_adversarial_loss(critic(d_params, pred), kind)
            return loss + weight * adversarial, {**terms, "adv": adversarial}

        (loss, terms), pred_grad = jax.value_and_grad(generator_loss, has_aux=True)(fake)
        (grads,) = generator_vjp(pred_grad)
        if axis_name is not None:
            grads, loss, terms = jax.lax.pmean((grads, loss, terms), axis_name)
        updates, opt_state = txs[GENERATOR].update(grads, state["opt_states"][GENERATOR], generator["params"])
        new_state = {
            "models": {GENERATOR: {"params": optax.apply_updates(generator["params"], updates), "batch_stats": stats},
                       DISCRIMINATOR: {"params": d_params, "batch_stats": critic_vars["batch_stats"]}},
            "opt_states": {GENERATOR: opt_state, DISCRIMINATOR: d_opt_state},
            "step": state["step"] + 1,
            "key": state["key"],
        }
        metrics = {**terms, "loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"]),
                   "d_loss": d_loss, "d_grad_norm": optax.tree.norm(d_grads)}
        return new_state, metrics

    return train_step


OBJECTIVES.register("supervised")(Objective(
    models=lambda cfg, axis_name: {GENERATOR: generator_model(cfg, axis_name)},
    optimizers=lambda cfg: {GENERATOR: make_optimizer(cfg.train)},
    make_step=make_supervised_step,
))
OBJECTIVES.register("pix2pix")(Objective(
    models=lambda cfg, axis_name: {GENERATOR: generator_model(cfg, axis_name),
                                   DISCRIMINATOR: discriminator_model(cfg, axis_name)},
    optimizers=lambda cfg: {GENERATOR: make_optimizer(cfg.train), DISCRIMINATOR: discriminator_optimizer(cfg)},
    make_step=make_pix2pix_step,
))
