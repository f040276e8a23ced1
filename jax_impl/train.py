"""The JAX training engine: a training objective's models and optax optimizers, its step
jit-compiled data-parallel (or pmapped), and orbax checkpoints of the whole train state.

What is trained and how one step updates it comes from the objective (``train.objective``,
``jax_impl/objectives.py``); the engine is the same for any number of models. The step takes
and returns the plain dict train state of ``jax_impl/train_state.py`` and runs under the run's
matmul precision (``train.precision``). Metrics stay on device until the loop asks
(``fetch_metrics``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from mrsynth.backend import GENERATOR, Batch
from mrsynth.config import Config
from mrsynth.losses import step_batch_keys

from jax_impl import distributed
from jax_impl.checkpoint import CheckpointStore
from jax_impl.losses import LOSSES
from jax_impl.objectives import OBJECTIVES, Metrics
from jax_impl.precision import precision_scope
from jax_impl.predict import JaxPredictor
from jax_impl.train_state import TrainState, Variables, init_train_state, merge_model


def abstract_train_state(cfg: Config) -> TrainState:
    """Shapes and dtypes of a run's train state, without allocating it (restore targets)."""
    objective = OBJECTIVES.lookup(cfg.train.objective)

    def initial() -> TrainState:
        return init_train_state(objective.models(cfg, None), objective.optimizers(cfg), cfg.train.seed)[1]

    return jax.eval_shape(initial)


class JaxEngine:
    """:class:`mrsynth.backend.TrainEngine` for JAX: data-parallel over ``devices`` (default all)."""

    def __init__(self, cfg: Config, run_dir: Path, devices: list[jax.Device] | None = None) -> None:
        distributed.maybe_initialize_distributed()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        self.mesh = distributed.data_mesh(devices)
        self.pmap = cfg.train.parallel == "pmap"
        distributed.check_batch_divisible(cfg.train.batch_size, self.mesh.size)
        self._batch_sharding = distributed.batch_sharding(self.mesh)
        self._replicated = distributed.replicated(self.mesh)
        self._local_devices = [d for d in self.mesh.devices.flat if d.process_index == self.process_index]

        objective = OBJECTIVES.lookup(cfg.train.objective)
        self.batch_keys = step_batch_keys(LOSSES.lookup(cfg.train.loss), objective)
        axis_name = distributed.DATA_AXIS if self.pmap else None
        txs = objective.optimizers(cfg)
        self.graphdefs, state = init_train_state(objective.models(cfg, axis_name), txs, cfg.train.seed)
        self._template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        step_fn = objective.make_step(self.graphdefs, txs, cfg, axis_name)
        if self.pmap:
            self._step = jax.pmap(step_fn, axis_name=distributed.DATA_AXIS, donate_argnums=0,
                                  devices=list(self.mesh.devices.flat))
        else:
            self._step = jax.jit(step_fn, donate_argnums=0,
                                 out_shardings=(self._replicated, self._replicated))
        self.state = self._place_state(state)
        self._checkpoints = CheckpointStore(self.run_dir / "checkpoints", cfg.train.keep_checkpoints)

    def _place_state(self, state: TrainState) -> TrainState:
        """Replicate a single-copy state on the mesh (sharded) or along a device axis (pmap)."""
        if self.pmap:
            return distributed.replicate(state, self._local_devices)
        return jax.device_put(state, self._replicated)

    def single_copy_state(self) -> TrainState:
        """The state as one copy (pmap: the first device's), for checkpoints and predictors."""
        return distributed.unreplicate(self.state) if self.pmap else self.state

    def place_batch(self, batch: Batch) -> dict[str, jax.Array]:
        """The arrays of a numpy batch the step reads (:attr:`batch_keys`: no mask unless the loss
        or objective uses it) on the devices, laid out as the compiled step expects (sharded, or
        split along a leading device axis for pmap). The loop places the next batches while a
        step runs; benchmarks place one batch and time the step alone."""
        batch = {key: batch[key] for key in self.batch_keys}
        if self.pmap:
            split = distributed.split_for_pmap(batch, len(self._local_devices))
            return jax.device_put(split, distributed.batch_sharding(distributed.data_mesh(self._local_devices)))
        return distributed.place_batch(batch, self._batch_sharding)

    def train_step_placed(self, placed: dict[str, jax.Array]) -> Metrics:
        """One step on a batch from :meth:`place_batch`; returns device-side metrics."""
        with precision_scope(self.cfg.train.precision):
            self.state, metrics = self._step(self.state, placed)
        return metrics

    def train_step(self, batch: Batch) -> Metrics:
        return self.train_step_placed(self.place_batch(batch))

    def fetch_metrics(self, handles: list[Metrics]) -> list[dict[str, float]]:
        local = [{k: v.addressable_data(0) for k, v in h.items()} for h in handles]
        return [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in row.items()}
                for row in jax.device_get(local)]

    def host_variables(self, name: str = GENERATOR) -> Variables:
        """A model's {"params", "batch_stats"} as numpy pure dicts."""
        variables = self.single_copy_state()["models"][name]
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), variables)  # replicated: any copy

    def current_model(self, name: str = GENERATOR) -> nnx.Module:
        return merge_model(self.graphdefs[name], self.host_variables(name))

    def predictor(self) -> JaxPredictor:
        """The generator, at the run's precision (validation scores what training computes)."""
        return JaxPredictor(self.current_model(), self.cfg.model, self.cfg.train.precision)

    def save_checkpoint(self, step: int, extra: dict[str, Any], is_best: bool) -> None:
        self._checkpoints.save(step, self.single_copy_state(), extra, is_best)

    def restore_checkpoint(self) -> tuple[int, dict[str, Any]] | None:
        """Load the latest ``checkpoints/last`` step into this engine, placed on its devices (resume);
        None when the run has none. Predictors read ``best`` or ``last`` through ``load_run_model``."""
        target_sharding = (jax.sharding.SingleDeviceSharding(self._local_devices[0]) if self.pmap
                           else self._replicated)
        abstract = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=target_sharding), self._template)
        restored = self._checkpoints.restore_latest(abstract)
        if restored is None:
            return None
        step, state, extra = restored
        self.state = distributed.replicate(state, self._local_devices) if self.pmap else state
        return step, extra

    def close(self) -> None:
        try:
            self._checkpoints.wait()
        finally:
            self._checkpoints.close()  # also after a failed save: no orbax thread outlives the run
