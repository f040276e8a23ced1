"""The torch train state as a checkpoint holds it: models, optimizers, update count and the RNG
streams, packed into one payload and loaded back into a live engine's objects.

The JAX backend's train state is a functional pytree (jax_impl/train_state.py); torch keeps the
state in its modules and optimizers, so here the state is what resuming exactly needs of them.
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from mrsynth.errors import CheckpointError


def rng_state(dropout_generator: torch.Generator) -> dict[str, Any]:
    """The global CPU (and CUDA) RNG states and the dropout stream's."""
    state = {"torch_cpu": torch.get_rng_state(), "dropout": dropout_generator.get_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def train_state_payload(models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                        dropout_generator: torch.Generator, updates: int, step: int,
                        extra: dict[str, Any], model_config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint file holds: every model's and optimizer's state dict, the update
    count, the RNG streams, the loop's ``extra`` record and the model config (as JSON)."""
    return {
        "step": step,
        "updates": updates,
        "models": {name: model.state_dict() for name, model in models.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "rng": rng_state(dropout_generator),
        "extra": json.dumps(extra),
        "model_config": json.dumps(model_config),
    }


def load_train_state(payload: dict[str, Any], source: Any, models: dict[str, nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer],
                     dropout_generator: torch.Generator) -> tuple[int, int, dict[str, Any]]:
    """Load a checkpoint payload into the live objects; (step, updates, extra). A payload of
    other models or optimizers is a ``CheckpointError`` naming ``source``."""
    try:
        if set(payload["models"]) != set(models):
            raise CheckpointError(f"{source}: holds models {', '.join(sorted(payload['models']))}; "
                                  f"this run trains {', '.join(sorted(models))}")
        for name, model in models.items():
            model.load_state_dict(payload["models"][name])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(payload["optimizers"][name])
        rng = payload["rng"]
        torch.set_rng_state(rng["torch_cpu"])
        dropout_generator.set_state(rng["dropout"])
        if "torch_cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        return int(payload["step"]), int(payload["updates"]), json.loads(payload["extra"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{source}: does not match this model/optimizer ({str(exc).splitlines()[0]})") from None
