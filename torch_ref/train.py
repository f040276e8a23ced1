"""The PyTorch :class:`~mrsynth.backend.TrainEngine`: a training objective's models and
optimizers on this process's device, its step, checkpoints.

What is trained and how one step updates it comes from the objective (``train.objective``,
``torch_ref/objectives.py``); training semantics follow docs/ARCHITECTURE.md exactly (decay
mask, per-update learning rate, optax-style clipping, float32 loss), so the JAX backend can be
validated against this one step by step. Steps run under the run's named precision
(``train.precision``). Per-step metrics stay on the device; the shared loop fetches them in
batches (one host sync per ``log_every`` steps).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrsynth.backend import GENERATOR, Batch
from mrsynth.config import Config
from mrsynth.losses import step_batch_keys
from torch_ref import checkpoint
from torch_ref.distributed import (DistContext, mean_over_processes, setup_distributed,
                                   teardown_distributed, wrap_model)
from torch_ref.layers import set_dropout_generator
from torch_ref.losses import LOSSES
from torch_ref.objectives import OBJECTIVES, Metrics, ParameterUpdate, Trainees
from torch_ref.precision import precision_scope
from torch_ref.predict import TorchPredictor, channels_last_format, to_channels_first
from torch_ref.train_state import load_train_state, train_state_payload


def configure_torch(cfg: Config, device: torch.device) -> None:
    """Process-wide switches: deterministic algorithms, or cuDNN autotuning for speed."""
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


class TorchEngine:
    """One run's models, optimizers and step on this process's device (DDP under torchrun)."""

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx: DistContext = setup_distributed()
        self.device = self.ctx.device
        self.process_index = self.ctx.rank
        self.process_count = self.ctx.world_size
        configure_torch(cfg, self.device)
        t, m = cfg.train, cfg.model
        self.channels_last = t.channels_last and self.device.type == "cuda"
        objective = OBJECTIVES.lookup(t.objective)
        self.batch_keys = step_batch_keys(LOSSES.lookup(t.loss), objective)

        memory_format = channels_last_format(m.dims) if self.channels_last else torch.preserve_format
        self.models = {name: model.to(self.device, memory_format=memory_format).train()
                       for name, model in objective.models(cfg).items()}
        self.dropout_generator = torch.Generator(device=self.device)
        self.dropout_generator.manual_seed(t.seed * 1000 + self.ctx.rank + 1)
        forwards = {}
        for name, model in self.models.items():
            set_dropout_generator(model, self.dropout_generator, compiled=t.torch_compile)
            # wrap_model converts BatchNorm layers in place, so self.models keep canonical names.
            wrapped = wrap_model(model, self.ctx)
            forwards[name] = torch.compile(wrapped, mode=t.torch_compile_mode) if t.torch_compile else wrapped
        self.optimizers = objective.optimizers(self.models, cfg, self.device)
        updates = {name: ParameterUpdate(self.models[name], optimizer, t.clip_norm, t.torch_compile_optimizer)
                   for name, optimizer in self.optimizers.items()}
        self._step = objective.make_step(Trainees(self.models, forwards, self.optimizers, updates), cfg,
                                         self.device.type)
        self.updates = 0

    # --- training -------------------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        x = to_channels_first(array, self.device)
        return x.contiguous(memory_format=channels_last_format(x.dim() - 2)) if self.channels_last else x

    def place_batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The arrays of the batch the step reads (:attr:`batch_keys`: no mask unless the loss or
        objective uses it) as channels-first tensors on this engine's device, in its memory
        format. The loop places the next batches while a step runs; benchmarks convert one batch
        and time :meth:`train_step_placed` without transfers."""
        return {name: self._to_device(batch[name]) for name in self.batch_keys}

    def train_step(self, batch: Batch) -> Metrics:
        """One training step on this process's shard; metrics stay on the device."""
        return self.train_step_placed(self.place_batch(batch))

    def train_step_placed(self, batch: dict[str, torch.Tensor]) -> Metrics:
        """:meth:`train_step` on a batch from :meth:`place_batch`."""
        with precision_scope(self.cfg.train.precision):
            metrics = self._step(batch, self.updates)
        self.updates += 1
        return self._mean_over_processes(metrics)

    def _mean_over_processes(self, metrics: Metrics) -> Metrics:
        """Every tensor metric averaged over processes with one all-reduce (DDP: all ranks agree)."""
        if not self.ctx.is_distributed:
            return metrics
        names = [k for k, v in metrics.items() if isinstance(v, torch.Tensor)]
        means = mean_over_processes(torch.stack([metrics[k].float() for k in names]), self.ctx)
        return {**metrics, **dict(zip(names, means))}

    def fetch_metrics(self, handles: list[Metrics]) -> list[dict[str, float]]:
        """Host values of many steps' metrics with one device-to-host copy."""
        tensors = [v.float() for h in handles for v in h.values() if isinstance(v, torch.Tensor)]
        values = iter(torch.stack(tensors).cpu().tolist() if tensors else [])
        return [{k: next(values) if isinstance(v, torch.Tensor) else float(v) for k, v in h.items()}
                for h in handles]

    def predictor(self) -> TorchPredictor:
        """The generator, at the run's precision (validation scores what training computes)."""
        return TorchPredictor(self.models[GENERATOR], self.cfg.model, self.device, self.cfg.train.precision,
                              self.channels_last)

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, step: int, extra: dict[str, Any], is_best: bool) -> None:
        """Rank 0 writes; other ranks hold identical replicas and skip (no collectives here)."""
        if self.process_index != 0:
            return
        payload = train_state_payload(self.models, self.optimizers, self.dropout_generator, self.updates, step,
                                      extra, self.cfg.to_dict()["model"])
        checkpoint.write_checkpoint(self.run_dir, step, payload, is_best, self.cfg.train.keep_checkpoints)

    def restore_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """Load the latest step checkpoint into this engine; None when the run has none."""
        found = checkpoint.step_checkpoints(self.run_dir)
        if not found:
            return None
        path = found[-1][1]
        step, self.updates, extra = load_train_state(checkpoint.read_checkpoint(path), path, self.models,
                                                     self.optimizers, self.dropout_generator)
        return step, extra

    def close(self) -> None:
        teardown_distributed(self.ctx)
