"""The JAX training engine: functional train state, jit-compiled data-parallel step, optax AdamW.

The model is split once into a static ``graphdef`` and pure-dict pytrees; the jitted step
takes and returns a plain dict train state (params, BatchNorm stats, optimizer state, step,
RNG key), so no Python graph traversal happens per step. Metrics stay on device until the
loop asks (``fetch_metrics``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mrsynth.backend import Batch
from mrsynth.config import Config, TrainConfig
from mrsynth.schedule import warmup_cosine

from jax_impl import distributed
from jax_impl.checkpoint import CheckpointStore
from jax_impl.losses import training_loss
from jax_impl.model import build_model
from jax_impl.predict import JaxPredictor

TrainState = dict[str, Any]  # {"params", "batch_stats", "opt_state", "step", "key"}
StepFn = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def lr_schedule(train: TrainConfig) -> Callable[[jax.Array], jax.Array]:
    """The shared warmup-cosine formula, evaluated by optax on its update count."""
    return lambda count: warmup_cosine(count, train.lr, train.warmup_steps, train.steps,
                                       train.end_lr_factor, xp=jnp)


def decay_mask(params: Any) -> Any:
    """Weight decay only on conv / conv-transpose kernels (ndim >= 3), never biases or norms."""
    return jax.tree.map(lambda p: p.ndim >= 3, params)


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the shared schedule and the decay mask."""
    return optax.chain(
        optax.clip_by_global_norm(train.clip_norm),
        optax.adamw(lr_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                    weight_decay=train.weight_decay, mask=decay_mask),
    )


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, dict, dict]:
    """(graphdef, params, batch stats) with the states as pure nested dicts."""
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


def merge_model(graphdef: nnx.GraphDef, params: dict, stats: dict) -> nnx.Module:
    return nnx.merge(graphdef, nnx.State(params), nnx.State(stats))


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int
                     ) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params, stats = split_model(model)
    state = {
        "params": params,
        "batch_stats": stats,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "key": jax.random.fold_in(jax.random.PRNGKey(seed), 1),  # dropout stream, raw uint32 key
    }
    return graphdef, state


def abstract_train_state(cfg: Config) -> TrainState:
    """Shapes and dtypes of a run's train state, without allocating it (restore targets)."""
    tx = make_optimizer(cfg.train)
    return jax.eval_shape(lambda: init_train_state(build_model(cfg.model), tx, cfg.train.seed)[1])


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, train: TrainConfig,
                    axis_name: str | None = None) -> StepFn:
    """The pure step function. With ``axis_name`` (pmap) it runs on one device's slice of the
    batch and averages loss and gradients across devices; without, it sees the global batch."""
    schedule = lr_schedule(train)

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        # Per-sample dropout keys from (key, step, global sample index): identical masks on
        # any number of devices, and a resumed run redraws exactly the same ones.
        local = batch["t1"].shape[0]
        index = jnp.arange(local)
        if axis_name is not None:
            index = index + jax.lax.axis_index(axis_name) * local
        step_key = jax.random.fold_in(state["key"], state["step"])
        sample_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)

        def loss_fn(params):
            model = merge_model(graphdef, params, state["batch_stats"])
            pred = model(batch["t1"], sample_keys)
            loss = training_loss(pred, batch["t2"], train)
            return loss, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        if axis_name is not None:
            grads = jax.lax.pmean(grads, axis_name)
            loss = jax.lax.pmean(loss, axis_name)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": stats,
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "key": state["key"],
        }
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state["step"])}
        return new_state, metrics

    return train_step


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

        model = build_model(cfg.model, seed=cfg.train.seed, compute_dtype=cfg.train.compute_dtype,
                            axis_name=distributed.DATA_AXIS if self.pmap else None,
                            conv3d=cfg.train.jax_conv3d)
        self.tx = make_optimizer(cfg.train)
        self.graphdef, state = init_train_state(model, self.tx, cfg.train.seed)
        self._template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        if self.pmap:
            step_fn = make_train_step(self.graphdef, self.tx, cfg.train, distributed.DATA_AXIS)
            self._step = jax.pmap(step_fn, axis_name=distributed.DATA_AXIS, donate_argnums=0,
                                  devices=list(self.mesh.devices.flat))
        else:
            step_fn = make_train_step(self.graphdef, self.tx, cfg.train)
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
        """A numpy batch on the devices, laid out as the compiled step expects (sharded, or split
        along a leading device axis for pmap). Benchmarks place one batch and time the step alone."""
        if self.pmap:
            split = distributed.split_for_pmap(batch, len(self._local_devices))
            return jax.device_put(split, distributed.batch_sharding(distributed.data_mesh(self._local_devices)))
        return distributed.place_batch(batch, self._batch_sharding)

    def train_step_placed(self, placed: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """One update on a batch from :meth:`place_batch`; returns device-side metrics."""
        self.state, metrics = self._step(self.state, placed)
        return metrics

    def train_step(self, batch: Batch) -> dict[str, jax.Array]:
        return self.train_step_placed(self.place_batch(batch))

    def fetch_metrics(self, handles: list[dict[str, jax.Array]]) -> list[dict[str, float]]:
        local = [{k: v.addressable_data(0) for k, v in h.items()} for h in handles]
        return [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in row.items()}
                for row in jax.device_get(local)]

    def host_variables(self) -> tuple[dict, dict]:
        """(params, batch stats) as numpy pure dicts."""
        state = self.single_copy_state()
        fetch = lambda x: np.asarray(x.addressable_data(0))  # noqa: E731  replicated: any copy
        return jax.tree.map(fetch, state["params"]), jax.tree.map(fetch, state["batch_stats"])

    def current_model(self) -> nnx.Module:
        params, stats = self.host_variables()
        return merge_model(self.graphdef, params, stats)

    def predictor(self) -> JaxPredictor:
        return JaxPredictor(self.current_model(), self.cfg.model)

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
