"""Data parallelism: a 1-D 'data' mesh, batch placement, multi-process start-up, pmap helpers.

The primary path is jit over a ``Mesh(devices, ('data',))``: the batch is sharded along its
leading axis, parameters and optimizer state are replicated, and XLA inserts the gradient
all-reduce. ``train.parallel=pmap`` is the compatibility variant: a leading device axis and
explicit ``pmean`` collectives.

Gradient all-reduce overlap (GPU): XLA inserts one all-reduce per gradient (combined into
buckets of ``xla_gpu_all_reduce_combine_threshold_bytes``, default 30 MiB) at the end of the
backward pass. Its latency-hiding scheduler (off by default on GPU) starts each bucket's
all-reduce asynchronously as soon as its gradients exist and schedules the rest of the backward
pass behind it. :func:`add_gpu_collective_flags` adds that flag to ``XLA_FLAGS`` when the CUDA
plugin is installed, before JAX initializes its backend, without overriding a flag the user set.

Batches are placed when the step is called, not prefetched from the loader: JAX dispatch and
``device_put`` are asynchronous, so the host already assembles and transfers batch n+1 while
step n runs, and the loader's saved state stays exactly at the last consumed batch (resume).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mrsynth.errors import ConfigError

DATA_AXIS = "data"
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# XLA flags for multi-GPU data parallelism (checked to parse in jaxlib 0.10; a flag XLA does not
# know aborts the process, so keep this list to flags of the supported versions).
GPU_COLLECTIVE_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=true",)


def with_flags(xla_flags: str, flags: Sequence[str]) -> tuple[str, list[str]]:
    """``xla_flags`` with each of ``flags`` appended unless it already sets that flag (the user's
    value wins); the new string and the flags added."""
    present = {f.split("=", 1)[0] for f in xla_flags.split()}
    added = [f for f in flags if f.split("=", 1)[0] not in present]
    return " ".join([*xla_flags.split(), *added]), added


def _cuda_plugin_installed(environ: Mapping[str, str]) -> bool:
    """Whether JAX will find a CUDA backend, decided without initializing JAX."""
    platforms = environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not ({"cuda", "gpu"} & set(platforms.split(","))):
        return False
    return any(re.fullmatch(r"jax[-_]cuda\d+[-_]plugin", dist.metadata["Name"] or "")
               for dist in importlib.metadata.distributions())


def add_gpu_collective_flags(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Append :data:`GPU_COLLECTIVE_FLAGS` to ``XLA_FLAGS`` on a CUDA install; the flags added.

    Must run before JAX initializes its backend (``jax_impl`` calls it when imported)."""
    if not _cuda_plugin_installed(environ):
        return []
    environ["XLA_FLAGS"], added = with_flags(environ.get("XLA_FLAGS", ""), GPU_COLLECTIVE_FLAGS)
    return added


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when the JAX_* variables say so; else do nothing.

    ``jax.distributed.initialize()`` reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID itself; on a cluster it can auto-detect (SLURM, Open MPI...), which is
    opted into with MRSYNTH_JAX_DISTRIBUTED=1. It must run before any other JAX call touches
    the backend, and only once per process.
    """
    wants = any(os.environ.get(name) for name in _DISTRIBUTED_ENV) or os.environ.get("MRSYNTH_JAX_DISTRIBUTED") == "1"
    if wants and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named 'data' over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(list(devices) if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, n_devices: int) -> None:
    if batch_size % n_devices:
        raise ConfigError(
            f"train.batch_size: {batch_size} is not divisible by the {n_devices} data-parallel devices"
        )


def place_batch(batch: Mapping[str, Any], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Put this process's numpy batch onto the mesh as one global array per key.

    Single process: ``device_put`` splits it over the devices. Multi-process: each process
    holds its slice of the global batch (the loader shards by process index).
    """
    if jax.process_count() == 1:
        return {key: jax.device_put(np.asarray(value), sharding) for key, value in batch.items()}
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in batch.items()}


def split_for_pmap(batch: Mapping[str, Any], n_local: int) -> dict[str, np.ndarray]:
    """(B, ...) -> (n_local, B / n_local, ...): the leading device axis pmap maps over."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        check_batch_divisible(value.shape[0], n_local)
        out[key] = value.reshape(n_local, value.shape[0] // n_local, *value.shape[1:])
    return out


def replicate(tree: Any, devices: Sequence[jax.Device]) -> Any:
    """Copy every leaf onto each device along a new leading axis (pmap's replicated state)."""
    sharding = batch_sharding(data_mesh(devices))
    n = len(devices)
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))), sharding), tree
    )


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a pmap-replicated tree."""
    return jax.tree.map(lambda x: x[0], tree)
