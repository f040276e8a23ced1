"""Data parallelism under ``torchrun``: process group, device choice, DDP wrapping.

Each process trains on its own shard of the global batch; DDP averages gradients, so with
equal shards the averaged gradient equals the single-process gradient of the global batch.
BatchNorm statistics are made global-batch too (like the JAX sharded path): SyncBatchNorm on
GPU, :class:`GlobalBatchNorm` (differentiable all-reduce of the moments) where SyncBatchNorm
is unavailable (CPU / gloo).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_process_group: bool

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed() -> DistContext:
    """Join the process group announced by torchrun's env vars (no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
        owns = True
    return DistContext(rank, world_size, local_rank, device, owns)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span all processes, on any device.

    Same parameters, buffers and update rule as ``nn.BatchNorm*d`` (momentum, unbiased running
    variance), so state_dict names and values stay canonical.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 3:
            raise ValueError(f"expected a (B, C, *spatial) input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), xf.numel() // channels, dtype=torch.float32, device=x.device)
        moments = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        with warnings.catch_warnings():  # deprecated, but differentiable in every torch we support
            warnings.simplefilter("ignore", FutureWarning)
            moments = differentiable_all_reduce(moments)
        total = moments[-1]
        mean = moments[:channels] / total
        var = (moments[channels:2 * channels] / total - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = var * (total / (total - 1.0))
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm*d by :class:`GlobalBatchNorm`, keeping parameters and buffers."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum,
                                    module.affine, module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        return converted.to(module.weight.device)
    for name, child in module.named_children():
        setattr(module, name, convert_global_batchnorm(child))
    return module


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Model for training: unchanged for one process, else global BatchNorm + DDP."""
    if not ctx.is_distributed:
        return model
    if ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[ctx.device.index])
    return DistributedDataParallel(convert_global_batchnorm(model))


def mean_over_processes(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a per-process scalar over all processes (no host sync on NCCL)."""
    if not ctx.is_distributed:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / ctx.world_size
