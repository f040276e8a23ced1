"""The functional JAX train state, keyed by model name, and moving models in and out of it.

A train state is a plain dict pytree (what the jitted step takes and returns, and what orbax
checkpoints)::

    {"models": {name: {"params": ..., "batch_stats": ...}},   # e.g. "generator"
     "opt_states": {name: optax state},                        # one optimizer per trained model
     "step": int32 scalar, "key": dropout key}

Models are split once into a static graphdef and pure-dict variables, so no Python graph
traversal happens per step.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

TrainState = dict[str, Any]
Variables = dict[str, Any]  # {"params": pure dict, "batch_stats": pure dict}


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Variables]:
    """(graphdef, {"params", "batch_stats"}) with the states as pure nested dicts."""
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return graphdef, {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(stats)}


def merge_model(graphdef: nnx.GraphDef, variables: Variables) -> nnx.Module:
    return nnx.merge(graphdef, nnx.State(variables["params"]), nnx.State(variables["batch_stats"]))


def batch_stats_of(model: nnx.Module) -> dict:
    """A model's BatchNorm statistics as a pure dict (after a training-mode forward)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def init_train_state(models: dict[str, nnx.Module], txs: dict[str, optax.GradientTransformation],
                     seed: int) -> tuple[dict[str, nnx.GraphDef], TrainState]:
    """(graphdef per model, the initial state); ``txs`` names the models that are trained."""
    graphdefs, variables = {}, {}
    for name, model in models.items():
        graphdefs[name], variables[name] = split_model(model)
    state = {
        "models": variables,
        "opt_states": {name: tx.init(variables[name]["params"]) for name, tx in txs.items()},
        "step": jnp.zeros((), jnp.int32),
        "key": jax.random.fold_in(jax.random.PRNGKey(seed), 1),  # dropout stream, raw uint32 key
    }
    return graphdefs, state
