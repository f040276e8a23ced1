"""Training objectives (``train.objective``) in PyTorch: which models a run trains, one AdamW
each, and the step that updates them. The mirror of ``jax_impl/objectives.py``.

An :class:`Objective` is three builders. The engine (``torch_ref/train.py``) calls them and
stays the same for every objective: it moves the models to the device, wraps them for DDP /
``torch.compile`` (:class:`Trainees`), averages the metrics over processes, checkpoints every
model and optimizer under its name and serves the ``generator`` as the predictor.
``supervised``, today's only objective: the generator U-Net, AdamW, and the registered loss
(``train.loss``) of its prediction. An adversarial objective registers here with models
``{"generator", "discriminator"}``, an optimizer for each and a step that updates both.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mrsynth.backend import GENERATOR
from mrsynth.config import Config, TrainConfig
from mrsynth.registry import Registry
from mrsynth.schedule import lr_at

from torch_ref.losses import training_loss
from torch_ref.model import build_model, decayed_parameter_names
from torch_ref.precision import autocast

Metrics = dict[str, torch.Tensor | float]
StepFn = Callable[[dict[str, torch.Tensor], int], Metrics]  # (channels-first batch, update index)


@dataclass(frozen=True)
class Trainees:
    """What a step works on, by model name."""

    models: dict[str, nn.Module]  # canonical modules: parameters, state_dict names
    forwards: dict[str, nn.Module]  # what the step calls: the model, DDP-wrapped and/or compiled
    optimizers: dict[str, torch.optim.Optimizer]


@dataclass(frozen=True)
class Objective:
    # Fresh models by name (on the CPU, seeded by ``train.seed``).
    models: Callable[[Config], dict[str, nn.Module]]
    # One optimizer per trained model, under the model's name (the models are on ``device``).
    optimizers: Callable[[dict[str, nn.Module], TrainConfig, torch.device], dict[str, torch.optim.Optimizer]]
    # (trainees, train, device type) -> step. The step returns this process's metrics: always
    # "loss", "grad_norm" (tensors) and "lr" (a float), plus what the objective adds.
    make_step: Callable[[Trainees, TrainConfig, str], StepFn]


OBJECTIVES: Registry[Objective] = Registry("train.objective", "objective", "torch backend")


def build_optimizer(model: nn.Module, train: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on conv / conv-transpose weights only (the canonical mask)."""
    decayed = decayed_parameter_names(model)
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decayed], "weight_decay": train.weight_decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr_at(0, train), betas=(train.b1, train.b2), eps=train.eps,
                             fused=fused)


def clip_grad_global_norm_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale ``grads`` in place by ``min(1, max_norm / ||g||)`` (optax's formula, no epsilon).

    Returns the global norm before clipping, as a device tensor (no host sync).
    """
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = torch.clamp(max_norm / total, max=1.0)
    torch._foreach_mul_(grads, scale)
    return total


def generator_model(cfg: Config) -> nn.Module:
    """The network being trained (``model.arch``), initialized from ``train.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        return build_model(cfg.model)


def make_supervised_step(trainees: Trainees, train: TrainConfig, device_type: str) -> StepFn:
    """One AdamW update of the generator on the registered loss of its prediction."""
    forward, optimizer = trainees.forwards[GENERATOR], trainees.optimizers[GENERATOR]
    params = list(trainees.models[GENERATOR].parameters())

    def step(batch: dict[str, torch.Tensor], update: int) -> Metrics:
        lr = lr_at(update, train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        with autocast(train.precision, device_type):
            pred = forward(batch["t1"])
        loss, terms = training_loss(pred, batch, train)
        loss.backward()
        grad_norm = clip_grad_global_norm_([p.grad for p in params if p.grad is not None], train.clip_norm)
        optimizer.step()
        return {**{k: v.detach() for k, v in terms.items()}, "loss": loss.detach(), "grad_norm": grad_norm,
                "lr": lr}

    return step


OBJECTIVES.register("supervised")(Objective(
    models=lambda cfg: {GENERATOR: generator_model(cfg)},
    optimizers=lambda models, train, device: {GENERATOR: build_optimizer(models[GENERATOR], train, device)},
    make_step=make_supervised_step,
))
