"""Training objectives (``train.objective``) in PyTorch: which models a run trains, one AdamW
each, and the step that updates them. The mirror of ``jax_impl/objectives.py``.

An :class:`Objective` is three builders. The engine (``torch_ref/train.py``) calls them and
stays the same for every objective: it moves the models to the device, wraps them for DDP /
``torch.compile``, gives each its :class:`ParameterUpdate` (clipping + AdamW step, eager or
compiled; all in :class:`Trainees`), averages the metrics over processes, checkpoints every
model and optimizer under its name and serves the ``generator`` as the predictor.
``supervised``: the generator U-Net, AdamW, and the registered loss (``train.loss``) of its
prediction. ``pix2pix``: the same generator and a conditional PatchGAN ``discriminator``
(``torch_ref/discriminator.py``) with its own AdamW; per step the discriminator is updated on
real and synthesized (T1, T2) pairs, then the generator on its loss + ``train.adv_weight`` x
the adversarial term against the updated discriminator (pix2pix's reference order).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mrsynth.backend import DISCRIMINATOR, GENERATOR
from mrsynth.config import Config, TrainConfig
from mrsynth.registry import Registry
from mrsynth.schedule import lr_at
from mrsynth.weights import initial_tensors

from torch_ref.discriminator import build_discriminator, discriminator_loss, generator_adversarial_loss
from torch_ref.losses import training_loss
from torch_ref.model import build_model, decayed_parameter_names
from torch_ref.precision import autocast
from torch_ref.weights import load_state_into

Metrics = dict[str, torch.Tensor | float]
StepFn = Callable[[dict[str, torch.Tensor], int], Metrics]  # (channels-first batch, update index)


@dataclass(frozen=True)
class Trainees:
    """What a step works on, by model name."""

    models: dict[str, nn.Module]  # canonical modules: parameters, state_dict names
    forwards: dict[str, nn.Module]  # what the step calls: the model, DDP-wrapped and/or compiled
    optimizers: dict[str, torch.optim.Optimizer]
    updates: dict[str, "ParameterUpdate"]  # clipping + optimizer step per model, eager or compiled


@dataclass(frozen=True)
class Objective:
    # Fresh models by name (on the CPU, seeded by ``train.seed``).
    models: Callable[[Config], dict[str, nn.Module]]
    # One optimizer per trained model, under the model's name (the models are on ``device``).
    optimizers: Callable[[dict[str, nn.Module], Config, torch.device], dict[str, torch.optim.Optimizer]]
    # (trainees, config, device type) -> step. The step returns this process's metrics: always
    # "loss", "grad_norm" (tensors) and "lr" (a float), plus what the objective adds.
    make_step: Callable[[Trainees, Config, str], StepFn]
    # Whether the step reads batch["mask"] beyond its loss (the engine places the mask only then).
    uses_mask: bool = False


OBJECTIVES: Registry[Objective] = Registry("train.objective", "objective", "torch backend")


def build_optimizer(model: nn.Module, train: TrainConfig, device: torch.device,
                    betas: tuple[float, float] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on conv / conv-transpose weights only (the canonical mask); the
    generator's betas from ``train`` unless given (the discriminator's). The step sets the lr."""
    decayed = decayed_parameter_names(model)
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decayed], "weight_decay": train.weight_decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    # CUDA: the fused kernel, unless the step is compiled (torch.compile does not trace the fused
    # kernel; it fuses the foreach implementation itself).
    fused = device.type == "cuda" and not train.torch_compile_optimizer
    return torch.optim.AdamW(groups, lr=lr_at(0, train), betas=betas or (train.b1, train.b2), eps=train.eps,
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
    """The network being trained (``model.arch``), initialized from ``train.seed`` without touching
    the global RNG, or from ``train.init_weights``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model)
    if (tensors := initial_tensors(cfg)) is not None:
        load_state_into(model, tensors, cfg.train.init_weights)
    return model


def set_lr(optimizer: torch.optim.Optimizer, lr: float | torch.Tensor) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class ParameterUpdate:
    """One model's update after its backward pass: clip the gradients by their global norm, then
    the optimizer step at this update's learning rate; returns the norm before clipping.

    ``compiled``: both run as one ``torch.compile``d function (PyTorch's compiled-optimizer
    recipe). The learning rate is then a device tensor filled each update, so a new value does not
    recompile; the arithmetic is the same AdamW.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float,
                 compiled: bool = False) -> None:
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.clip_norm = clip_norm
        device = self.params[0].device
        self.lr = torch.zeros((), dtype=torch.float32, device=device) if compiled else None
        self._apply = torch.compile(self._clip_and_step) if compiled else self._clip_and_step

    def _clip_and_step(self) -> torch.Tensor:
        grad_norm = clip_grad_global_norm_([p.grad for p in self.params if p.grad is not None], self.clip_norm)
        self.optimizer.step()
        return grad_norm

    def __call__(self, lr: float) -> torch.Tensor:
        set_lr(self.optimizer, lr if self.lr is None else self.lr.fill_(lr))
        return self._apply()


def make_supervised_step(trainees: Trainees, cfg: Config, device_type: str) -> StepFn:
    """One AdamW update of the generator on the registered loss of its prediction."""
    train = cfg.train
    forward, optimizer = trainees.forwards[GENERATOR], trainees.optimizers[GENERATOR]
    apply_update = trainees.updates[GENERATOR]

    def step(batch: dict[str, torch.Tensor], update: int) -> Metrics:
        lr = lr_at(update, train)
        optimizer.zero_grad(set_to_none=True)
        with autocast(train.precision, device_type):
            pred = forward(batch["t1"])
        loss, terms = training_loss(pred, batch, train)
        loss.backward()
        grad_norm = apply_update(lr)
        return {**{k: v.detach() for k, v in terms.items()}, "loss": loss.detach(), "grad_norm": grad_norm,
                "lr": lr}

    return step


def discriminator_model(cfg: Config) -> nn.Module:
    """The PatchGAN, seeing the T1 channels and a T2, seeded apart from the generator."""
    return build_discriminator(cfg.discriminator, cfg.model.dims, cfg.model.in_channels + 1, seed=cfg.train.seed + 1)


def make_pix2pix_step(trainees: Trainees, cfg: Config, device_type: str) -> StepFn:
    """One discriminator update, then one generator update against the updated discriminator."""
    train, kind, weight = cfg.train, cfg.discriminator.loss, cfg.train.adv_weight
    generator, critic = trainees.forwards[GENERATOR], trainees.forwards[DISCRIMINATOR]
    g_opt, d_opt = trainees.optimizers[GENERATOR], trainees.optimizers[DISCRIMINATOR]
    g_update, d_update = trainees.updates[GENERATOR], trainees.updates[DISCRIMINATOR]
    d_params = list(trainees.models[DISCRIMINATOR].parameters())

    def step(batch: dict[str, torch.Tensor], update: int) -> Metrics:
        lr = lr_at(update, train)
        t1 = batch["t1"]
        with autocast(train.precision, device_type):
            fake = generator(t1)
        d_opt.zero_grad(set_to_none=True)
        with autocast(train.precision, device_type):
            real_logits = critic(torch.cat([t1, batch["t2"].to(t1.dtype)], dim=1))
            fake_logits = critic(torch.cat([t1, fake.detach().to(t1.dtype)], dim=1))
        d_loss = discriminator_loss(real_logits, fake_logits, kind)
        d_loss.backward()
        d_grad_norm = d_update(lr_at(update, train, cfg.discriminator.lr))
        g_opt.zero_grad(set_to_none=True)
        for p in d_params:  # the generator's step leaves the critic's gradients alone
            p.requires_grad_(False)
        try:
            with autocast(train.precision, device_type):
                fake_logits = critic(torch.cat([t1, fake.to(t1.dtype)], dim=1))
            loss, terms = training_loss(fake, batch, train)
            adversarial = generator_adversarial_loss(fake_logits, kind)
            total = loss + weight * adversarial
            total.backward()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        grad_norm = g_update(lr)
        return {**{k: v.detach() for k, v in terms.items()}, "adv": adversarial.detach(), "loss": total.detach(),
                "grad_norm": grad_norm, "lr": lr, "d_loss": d_loss.detach(), "d_grad_norm": d_grad_norm}

    return step


OBJECTIVES.register("supervised")(Objective(
    models=lambda cfg: {GENERATOR: generator_model(cfg)},
    optimizers=lambda models, cfg, device: {GENERATOR: build_optimizer(models[GENERATOR], cfg.train, device)},
    make_step=make_supervised_step,
))
OBJECTIVES.register("pix2pix")(Objective(
    models=lambda cfg: {GENERATOR: generator_model(cfg), DISCRIMINATOR: discriminator_model(cfg)},
    optimizers=lambda models, cfg, device: {
        GENERATOR: build_optimizer(models[GENERATOR], cfg.train, device),
        DISCRIMINATOR: build_optimizer(models[DISCRIMINATOR], cfg.train, device,
                                       (cfg.discriminator.b1, cfg.discriminator.b2))},
    make_step=make_pix2pix_step,
))
