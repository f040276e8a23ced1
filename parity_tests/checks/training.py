"""Training steps through the backends' real step functions: AdamW update, BatchNorm statistics, trajectory."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mrsynth.backend import GENERATOR
from mrsynth.config import Config
from mrsynth.parity.metrics import worst_rel_l2
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES, ToleranceTable, trajectory_regime
from mrsynth.precision import get_precision

from jax_impl.model import model_structure as jax_model_structure
from jax_impl.objectives import OBJECTIVES as JAX_OBJECTIVES
from jax_impl.train_state import init_train_state, merge_model
from jax_impl.weights import load_torch_into, model_to_torch
from torch_ref.train import TorchEngine
from torch_ref.weights import load_state_into

from parity_tests.checks.pairs import inert_parameters, params_only, stats_only, torch_tensors
from parity_tests.checks.precision import precision_context


@dataclass
class TrainTrace:
    """Per-step host metrics and canonical tensors after selected numbers of updates."""

    metrics: list[dict[str, float]]
    snapshots: dict[int, dict[str, np.ndarray]]


def jax_training(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
                 snapshot_at: Sequence[int]) -> TrainTrace:
    """The JAX engine's jitted step (the objective's step and optimizers) from ``tensors``."""
    model = jax_model_structure(cfg.model, compute_dtype=get_precision(cfg.train.precision).activations)
    load_torch_into(model, tensors, "parity initial weights")
    objective = JAX_OBJECTIVES.lookup(cfg.train.objective)
    txs = objective.optimizers(cfg)
    graphdefs, state = init_train_state({GENERATOR: model}, txs, cfg.train.seed)
    step = jax.jit(objective.make_step(graphdefs, txs, cfg, None))
    handles, snapshots = [], {}
    for i, batch in enumerate(batches, 1):
        state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
        handles.append(metrics)
        if i in snapshot_at:
            model = merge_model(graphdefs[GENERATOR], state["models"][GENERATOR])
            snapshots[i] = model_to_torch(model)
    metrics = [{k: float(v) for k, v in m.items()} for m in jax.device_get(handles)]
    return TrainTrace(metrics, snapshots)


def torch_training(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
                   snapshot_at: Sequence[int], run_dir: Path) -> TrainTrace:
    """The torch engine (:class:`TorchEngine`, its ``train_step``) from ``tensors``."""
    engine = TorchEngine(cfg, run_dir)
    try:
        load_state_into(engine.models[GENERATOR], tensors, "parity initial weights")
        handles, snapshots = [], {}
        for i, batch in enumerate(batches, 1):
            handles.append(engine.train_step(batch))
            if i in snapshot_at:
                snapshots[i] = torch_tensors(engine.models[GENERATOR])  # a copy: the engine updates in place
        return TrainTrace(engine.fetch_metrics(handles), snapshots)
    finally:
        engine.close()


def train_both(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
               snapshot_at: Sequence[int], work_dir: Path, precision: str = "float32"
               ) -> tuple[TrainTrace, TrainTrace]:
    """(jax, torch) traces of the same training from the same weights on the same batches."""
    if cfg.model.dropout > 0:
        raise ValueError("training parity needs model.dropout = 0 (dropout masks are framework RNG)")
    with precision_context(precision):
        return (jax_training(tensors, cfg, batches, snapshot_at),
                torch_training(tensors, cfg, batches, snapshot_at, work_dir / "torch-run"))


def _functional(tensors: dict[str, np.ndarray], inert: set[str]) -> dict[str, np.ndarray]:
    return {k: v for k, v in params_only(tensors).items() if k not in inert}


def _rel(value: float, reference: float) -> float:
    return abs(value - reference) / max(abs(reference), 1e-30)


BN_STATS_STEPS = 3  # "a few training steps" for the BatchNorm running-statistics comparison


def training_checks(tensors: dict[str, np.ndarray], cfg: Config, batches: Sequence[dict[str, np.ndarray]],
                    work_dir: Path, case: str, precision: str = "float32",
                    tolerances: ToleranceTable = DEFAULT_TOLERANCES
                    ) -> tuple[list[CheckResult], TrainTrace, TrainTrace]:
    """Both engines train from the same weights on the same batches; compare, after update 1,
    the AdamW update (schedule, clipping, decay mask), grad norm and learning rate; after
    ``BN_STATS_STEPS`` updates the BatchNorm running statistics; at every step the loss; at the
    end the parameters. Returns the rows and both traces (for synthesis from the result)."""
    n = len(batches)
    k = min(BN_STATS_STEPS, n)
    jax_trace, torch_trace = train_both(tensors, cfg, batches, sorted({1, k, n}), work_dir, precision)
    case = f"{case} {precision}"
    rows = _first_update_rows(tensors, cfg, jax_trace, torch_trace, case, precision, tolerances)
    if cfg.model.norm == "batch":
        rows += _batchnorm_rows(jax_trace, torch_trace, k, case, precision, tolerances)
    loss_errs = [_rel(j["loss"], t["loss"]) for j, t in zip(jax_trace.metrics, torch_trace.metrics)]
    worst_step = int(np.argmax(loss_errs))
    inert = inert_parameters(cfg.model, list(tensors))
    err_final, name = worst_rel_l2(_functional(jax_trace.snapshots[n], inert),
                                   _functional(torch_trace.snapshots[n], inert))
    excluded = f"; {len(inert)} inert biases excluded" if inert else ""
    first, last = torch_trace.metrics[0]["loss"], torch_trace.metrics[-1]["loss"]
    regime = trajectory_regime(cfg.model, cfg.train)
    suffix = "_smooth" if regime == "smooth" else ""
    lr_err = max(_rel(j["lr"], t["lr"]) for j, t in zip(jax_trace.metrics, torch_trace.metrics))
    rows += [
        CheckResult("trajectory", f"{case} {n} steps", "max rel diff(loss) over steps", max(loss_errs),
                    tolerances["traj_loss" + suffix, precision],
                    note=f"{regime}; worst at step {worst_step + 1}; torch loss {first:.4g} -> {last:.4g}"),
        CheckResult("trajectory", f"{case} {n} steps", "max rel_l2(final params)", err_final,
                    tolerances["traj_params" + suffix, precision], note=f"{regime}; worst: {name}{excluded}"),
        CheckResult("trajectory", f"{case} {n} steps", "max rel diff(lr) over steps", lr_err,
                    tolerances["lr", precision], note="warmup-cosine, one shared formula"),
    ]
    return rows, jax_trace, torch_trace


def _batchnorm_rows(jax_trace: TrainTrace, torch_trace: TrainTrace, k: int, case: str, precision: str,
                    tolerances: ToleranceTable) -> list[CheckResult]:
    """Running statistics after update 1 (all of them) and after ``k`` updates (variances and
    counters: from update 2 on, a running mean also accumulates its inert conv bias, whose
    noise-driven AdamW walk differs between frameworks; a variance is blind to that shift)."""
    stats_1 = [stats_only(trace.snapshots[1]) for trace in (jax_trace, torch_trace)]
    err_1, name_1 = worst_rel_l2(*stats_1)
    stats_k = [{n: v for n, v in stats_only(trace.snapshots[k]).items() if "running_mean" not in n}
               for trace in (jax_trace, torch_trace)]
    err_k, name_k = worst_rel_l2(*stats_k)
    return [
        CheckResult("bn_stats", f"{case} after 1 step", "max rel_l2(running stats)", err_1,
                    tolerances["bn_stats", precision], note=f"worst: {name_1}"),
        CheckResult("bn_stats", f"{case} after {k} steps", "max rel_l2(running var, count)", err_k,
                    tolerances["bn_stats_trained", precision], note=f"worst: {name_k}"),
    ]


def _first_update_rows(tensors: dict[str, np.ndarray], cfg: Config, jax_trace: TrainTrace,
                       torch_trace: TrainTrace, case: str, precision: str, tolerances: ToleranceTable
                       ) -> list[CheckResult]:
    """Update 1 and the gradient norm. Not in bfloat16: AdamW's first update is ~lr * sign(g), and
    bf16 gradients flip the sign of small elements, so only the gradient norm is compared."""
    mj, mt = jax_trace.metrics[0], torch_trace.metrics[0]
    norm_row = CheckResult("adamw_step", case, "rel diff(grad_norm)", _rel(mj["grad_norm"], mt["grad_norm"]),
                           tolerances["grad_norm", precision])
    if precision == "bfloat16":
        return [norm_row]
    inert = inert_parameters(cfg.model, list(tensors))
    initial = _functional(tensors, inert)
    new_jax, new_torch = _functional(jax_trace.snapshots[1], inert), _functional(torch_trace.snapshots[1], inert)
    err_upd, name_upd = worst_rel_l2({k: new_jax[k] - initial[k] for k in initial},
                                     {k: new_torch[k] - initial[k] for k in initial})
    err_new, name_new = worst_rel_l2(new_jax, new_torch)
    clip = cfg.train.clip_norm
    clipping = "active" if mt["grad_norm"] > clip else "inactive"
    return [
        CheckResult("adamw_step", case, "max rel_l2(update 1)", err_upd, tolerances["adamw_update", precision],
                    note=f"worst: {name_upd}; clipping {clipping} (|g| {mt['grad_norm']:.3g}, clip {clip:g})"
                         + (f"; {len(inert)} inert biases excluded" if inert else "")),
        CheckResult("adamw_step", case, "max rel_l2(params after update 1)", err_new,
                    tolerances["adamw_params", precision], note=f"worst: {name_new}"),
        norm_row,
    ]


def loader_batches(volumes: Sequence, cfg: Config, steps: int) -> list[dict[str, np.ndarray]]:
    """The first ``steps`` batches of the shared training pipeline (fed to both backends)."""
    from mrsynth.data.loader import make_train_loader

    loader = make_train_loader(list(volumes), cfg, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    try:
        return [next(loader) for _ in range(steps)]
    finally:
        loader.close()
