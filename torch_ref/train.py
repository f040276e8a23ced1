"""The PyTorch :class:`~mrsynth.backend.TrainEngine`: model, AdamW, one training step, checkpoints.

Training semantics follow docs/ARCHITECTURE.md exactly (decay mask, per-update learning rate
from :func:`mrsynth.schedule.lr_at`, optax-style global-norm clipping, float32 loss), so the JAX
backend can be validated against this one step by step. Per-step metrics stay on the device;
the shared loop fetches them in batches (one host sync per ``log_every`` steps).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrsynth.backend import Batch
from mrsynth.config import Config
from mrsynth.errors import CheckpointError
from mrsynth.schedule import lr_at
from torch_ref import checkpoint
from torch_ref.distributed import (DistContext, mean_over_processes, setup_distributed,
                                   teardown_distributed, wrap_model)
from torch_ref.losses import training_loss
from torch_ref.layers import set_dropout_generator
from torch_ref.model import build_model, decayed_parameter_names
from torch_ref.predict import TorchPredictor, to_channels_first


def configure_torch(cfg: Config, device: torch.device) -> None:
    """Process-wide switches: deterministic algorithms, or cuDNN autotuning for speed."""
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on conv / conv-transpose weights only (the canonical mask)."""
    t = cfg.train
    decayed = decayed_parameter_names(model)
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n in decayed], "weight_decay": t.weight_decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr_at(0, t), betas=(t.b1, t.b2), eps=t.eps, fused=fused)


def clip_grad_global_norm_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale ``grads`` in place by ``min(1, max_norm / ||g||)`` (optax's formula, no epsilon).

    Returns the global norm before clipping, as a device tensor (no host sync).
    """
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = torch.clamp(max_norm / total, max=1.0)
    torch._foreach_mul_(grads, scale)
    return total


class TorchEngine:
    """One run's model, optimizer and step on this process's device (DDP under torchrun)."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx: DistContext = setup_distributed()
        self.device = self.ctx.device
        self.process_index = self.ctx.rank
        self.process_count = self.ctx.world_size
        configure_torch(cfg, self.device)
        t, m = cfg.train, cfg.model
        self.channels_last = t.channels_last and m.dims == 2 and self.device.type == "cuda"
        self.autocast_dtype = torch.bfloat16 if t.compute_dtype == "bfloat16" else None

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)
            model = build_model(m)
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format).train()
        self.dropout_generator = torch.Generator(device=self.device)
        self.dropout_generator.manual_seed(t.seed * 1000 + self.ctx.rank + 1)
        set_dropout_generator(self.model, self.dropout_generator)
        # wrap_model converts BatchNorm layers in place, so self.model keeps canonical names.
        self.train_model = wrap_model(self.model, self.ctx)
        self.forward = torch.compile(self.train_model) if t.torch_compile else self.train_model
        self.optimizer = build_optimizer(self.model, cfg, self.device)
        self.params = list(self.model.parameters())
        self.updates = 0

    # --- training -------------------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        x = to_channels_first(array, self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def place_batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``t1``/``t2`` as channels-first tensors on this engine's device, in its memory format.
        Benchmarks place one batch and time :meth:`train_step_placed` without transfers."""
        return {"t1": self._to_device(batch["t1"]), "t2": self._to_device(batch["t2"])}

    def train_step(self, batch: Batch) -> dict[str, Any]:
        """One AdamW update on this process's shard; metrics stay on the device."""
        return self.train_step_placed(self.place_batch(batch))

    def train_step_placed(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """:meth:`train_step` on a batch from :meth:`place_batch`."""
        t1, t2 = batch["t1"], batch["t2"]
        lr = lr_at(self.updates, self.cfg.train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            pred = self.forward(t1)
        loss = training_loss(pred, t2, self.cfg.train)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        grad_norm = clip_grad_global_norm_(grads, self.cfg.train.clip_norm)
        self.optimizer.step()
        self.updates += 1
        return {"loss": mean_over_processes(loss.detach(), self.ctx), "grad_norm": grad_norm, "lr": lr}

    def fetch_metrics(self, handles: list[dict[str, Any]]) -> list[dict[str, float]]:
        """Host values of many steps' metrics with one device-to-host copy."""
        if not handles:
            return []
        stacked = torch.stack([torch.stack([h["loss"].float(), h["grad_norm"].float()]) for h in handles])
        values = stacked.cpu().tolist()
        return [{"loss": loss, "grad_norm": norm, "lr": float(h["lr"])}
                for (loss, norm), h in zip(values, handles)]

    def predictor(self) -> TorchPredictor:
        return TorchPredictor(self.model, self.cfg.model, self.device, self.cfg.train.compute_dtype,
                              self.channels_last)

    # --- checkpoints ----------------------------------------------------------------------
    def _rng_state(self) -> dict[str, Any]:
        state = {"torch_cpu": torch.get_rng_state(), "dropout": self.dropout_generator.get_state()}
        if torch.cuda.is_available():
            state["torch_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save_checkpoint(self, step: int, extra: dict[str, Any], is_best: bool) -> None:
        """Rank 0 writes; other ranks hold identical replicas and skip (no collectives here)."""
        if self.process_index != 0:
            return
        payload = {
            "step": step,
            "updates": self.updates,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self._rng_state(),
            "extra": json.dumps(extra),
            "model_config": json.dumps(self.cfg.to_dict()["model"]),
        }
        checkpoint.write_checkpoint(self.run_dir, step, payload, is_best, self.cfg.train.keep_checkpoints)

    def restore_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """Load the latest step checkpoint into this engine; None when the run has none."""
        found = checkpoint.step_checkpoints(self.run_dir)
        if not found:
            return None
        path = found[-1][1]
        payload = checkpoint.read_checkpoint(path)
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            rng = payload["rng"]
            torch.set_rng_state(rng["torch_cpu"])
            self.dropout_generator.set_state(rng["dropout"])
            if "torch_cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["torch_cuda"])
            self.updates = int(payload["updates"])
            step, extra = int(payload["step"]), json.loads(payload["extra"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: does not match this model/optimizer ({str(exc).splitlines()[0]})") from None
        return step, extra

    def close(self) -> None:
        teardown_distributed(self.ctx)
