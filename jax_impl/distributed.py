"""Data parallelism: a 1-D 'data' mesh, batch placement, multi-process start-up, pmap helpers.

The primary path is jit over a ``Mesh(devices, ('data',))``: the batch is sharded along its
leading axis, parameters and optimizer state are replicated, and XLA inserts the gradient
all-reduce. ``train.parallel=pmap`` is the compatibility variant: a leading device axis and
explicit ``pmean`` collectives.

Batches are placed when the step is called, not prefetched from the loader: JAX dispatch and
``device_put`` are asynchronous, so the host already assembles and transfers batch n+1 while
step n runs, and the loader's saved state stays exactly at the last consumed batch (resume).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mrsynth.errors import ConfigError

DATA_AXIS = "data"
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


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
