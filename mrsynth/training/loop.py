"""The one training loop both backends run.

The loop owns everything that is not framework arithmetic: data (discovery, split, cached
volumes, the grain loader and its state, the 2-deep device prefetch), logging every ``log_every`` steps (the only host
sync), validation on whole held-out volumes through the shared inference, checkpoint cadence,
the NaN/Inf guard, resume, and the final portable export. A backend only supplies a
:class:`~mrsynth.backend.TrainEngine`.
"""
from __future__ import annotations

import functools
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth import backend as backends
from mrsynth.backend import TrainEngine
from mrsynth.config import Config, with_absolute_paths
from mrsynth.data.contract import PreprocessingContract, build_contract, write_contract
from mrsynth.subjects import subject_splits
from mrsynth.data.loader import LoaderWorkerLost, make_train_loader
from mrsynth.data.preprocess import Volume, fit_training_normalization, load_volume
from mrsynth.data.splits import spread_over_sites
from mrsynth.errors import CheckpointError, ConfigError, DataError, Interrupted, MrsynthError, TrainingDiverged
from mrsynth.inference.grid import synthesize_on_model_grid
from mrsynth.evaluation.metrics import volume_metrics
from mrsynth.fileio import remove_leftover_temporaries
from mrsynth import runs
from mrsynth.training.logging import RunLogger, preview_slices
from mrsynth.training.prefetch import PREFETCH_DEPTH, DevicePrefetch
from mrsynth.weights import initial_tensors

VAL_SELECT_METRIC = "mae"  # lower is better; chooses the best checkpoint


@dataclass
class TrainData:
    """Volumes of one run: training volumes feed the loader, validation ones are synthesized whole.

    ``contract`` is the run's preprocessing contract (fixed by the training subjects).
    """

    train: list[Volume]
    val: list[Volume]
    contract: PreprocessingContract
    subjects: dict[str, list[str]] = field(default_factory=dict)


def load_train_data(cfg: Config) -> TrainData:
    """Discover, split by subject and load (through the cache) the volumes a run needs."""
    splits = subject_splits(cfg.data)
    if not splits["train"]:
        raise ConfigError("data: the split leaves no training subjects")
    data_cfg = fit_training_normalization(cfg.data, splits["train"])
    train = [load_volume(f, data_cfg) for f in splits["train"]]
    val = [load_volume(f, data_cfg) for f in spread_over_sites(splits["val"], cfg.train.val_subjects_max)]
    subjects = {k: [f.subject for f in v] for k, v in splits.items()}
    contract = build_contract(data_cfg, splits["train"], train, subjects)
    return TrainData(train, val, contract, subjects)


def validate(engine: TrainEngine, volumes: list[Volume], cfg: Config, contract: PreprocessingContract,
             previews: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, float]:
    """Masked metrics of whole synthesized validation volumes (as predict delivers them), averaged.

    ``previews``, when given, receives each subject's display slices (TensorBoard images)."""
    predictor = engine.predictor()
    rows = []
    for vol in volumes:
        pred = synthesize_on_model_grid(vol.t1, vol.mask, vol.geometry.voxel_size, predictor, cfg.data, cfg.eval,
                                        contract)[0].t2
        rows.append(volume_metrics(pred, vol.t2, vol.mask, cfg.eval.data_range))
        if previews is not None:
            previews[vol.subject] = preview_slices(vol.t1, vol.t2, pred, vol.mask, cfg.data.slice_axis)
    keys = ("psnr", "ssim", "mae", "nrmse", "pearson")
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def _launched_multiprocess() -> bool:
    """Started by torchrun or with JAX multi-process variables (several processes, one run)."""
    return any(int(os.environ.get(name, "1")) > 1 for name in ("WORLD_SIZE", "JAX_NUM_PROCESSES"))


RANK_VARIABLES = ("RANK", "JAX_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")


def _launch_rank() -> int:
    """This process's index in a multi-process launch (0 alone), known before any backend starts:
    only process 0 locks the run folder and writes to it."""
    return next((int(os.environ[name]) for name in RANK_VARIABLES if name in os.environ), 0)


def _due(step: int, total: int, every: int) -> bool:
    """Whether an every-N action (log, validate, checkpoint) happens at ``step``; always at the end."""
    return step % every == 0 or step == total


def window_metrics(values: list[dict[str, float]]) -> dict[str, float]:
    """One log row from the steps of a window: the mean of every metric the engine reports,
    except the learning rate, which is its value at the last step; loss, grad_norm and lr first,
    then the objective's own terms."""
    first = [k for k in ("loss", "grad_norm", "lr") if k in values[-1]]
    keys = first + sorted(k for k in values[-1] if k not in first)
    return {k: values[-1][k] if k == "lr" else float(np.mean([v[k] for v in values])) for k in keys}


def _check_finite(values: list[dict[str, float]], first_step: int, run_dir: Path,
                  last_ckpt: int | None) -> None:
    for offset, row in enumerate(values):
        if not math.isfinite(row["loss"]):
            kept = f"last good checkpoint: step {last_ckpt}" if last_ckpt else "no checkpoint was written"
            raise TrainingDiverged(
                f"{run_dir}: loss became {row['loss']} at step {first_step + offset}; "
                f"training stopped ({kept}); lower train.lr or check the data"
            )


class StopSignals:
    """SIGINT/SIGTERM while training: the first one asks the loop to stop after the current step
    and save a checkpoint there (batch schedulers and ``docker stop`` send SIGTERM); a second
    one, or one before the loop can save, stops at once (atomic writes keep earlier checkpoints)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False  # True while the loop can stop cleanly by itself
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python only allows it there
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if not (first and self.deferred):
            raise Interrupted("interrupted", 128 + self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def _stopped_message(run_dir: Path, step: int, last_ckpt: int | None, resuming: bool = False) -> str:
    """The one line a stopped run prints: where it stopped and how to continue."""
    if resuming:
        return f"interrupted before training resumed; resume with: python run.py train --resume {run_dir}"
    if last_ckpt is None:
        return f"interrupted at step {step}; no checkpoint was saved, so start the run again"
    where = f"step {step}" if last_ckpt == step else f"step {step} (last checkpoint: step {last_ckpt})"
    return f"interrupted at {where}; resume with: python run.py train --resume {run_dir}"


def _lost_worker_message(lost: LoaderWorkerLost, run_dir: Path, step: int, workers: int) -> str:
    """The one line of a run whose loader lost a worker: what happened, where it saved, how to go on
    (with fewer workers where the out-of-memory killer is the likely cause)."""
    resume = f"resume with: python run.py train --resume {run_dir}"
    if lost.exit_code == -signal.SIGKILL:
        resume += f" --set data.workers={max(workers - 1, 0)}"
    return f"{lost}; saved step {step}; {resume}"


def train(cfg: Config, backend_name: str, run_dir: Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; return its summary. ``run_dir`` is required with ``resume``.

    The run folder is locked while this runs; SIGINT/SIGTERM save a checkpoint and raise
    :class:`~mrsynth.errors.Interrupted` (see :class:`StopSignals`).
    """
    if run_dir is None and _launched_multiprocess():
        raise ConfigError("multi-process training (torchrun / jax.distributed) needs --run-dir, "
                          "so that every process writes to the same run directory")
    leader = _launch_rank() == 0
    if not resume:
        cfg = with_absolute_paths(cfg)
        initial_tensors(cfg)  # a wrong train.init_weights file fails before the run folder exists
    with StopSignals() as stop:
        if not leader:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        elif resume:
            run_dir = Path(run_dir)
            runs.lock_run_dir(run_dir)
        else:
            run_dir = runs.new_run_dir(cfg, backend_name, run_dir)
        try:
            if leader:
                for folder in (run_dir, run_dir / "checkpoints"):
                    remove_leftover_temporaries(folder)
            return _train_in(cfg, backend_name, run_dir, resume, stop)
        finally:
            if leader:
                runs.unlock_run_dir(run_dir)


def _train_in(cfg: Config, backend_name: str, run_dir: Path, resume: bool, stop: StopSignals) -> dict[str, Any]:
    """:func:`train` in its locked run folder."""
    backend = backends.get_backend(backend_name)
    data = load_train_data(cfg)
    engine = backend.create_engine(cfg, run_dir)
    leader = engine.process_index == 0
    t = cfg.train
    step, best, best_step, last_ckpt, last_val = 0, None, None, None, {}
    status: str | None = None  # None until training starts: run.json stays as it was
    loader = logger = None
    try:
        restored = engine.restore_checkpoint() if resume else None
        if resume and restored is None:
            raise CheckpointError(f"{run_dir}: no checkpoint to resume from; start a new run instead")
        if leader and not resume:
            runs.write_run_start(run_dir, cfg, backend_name)
            write_contract(run_dir, data.contract)
        loader = make_train_loader(
            data.train, cfg, batch_size=t.batch_size // engine.process_count, seed=t.seed,
            shard_index=engine.process_index, shard_count=engine.process_count,
        )
        if restored is not None:
            step, extra = restored
            loader.set_state(extra["loader"])
            best, best_step, last_ckpt = extra.get("best"), extra.get("best_step"), step
        batches = DevicePrefetch(loader, engine.place_batch, PREFETCH_DEPTH)
        logger = RunLogger(run_dir, t.steps, step, enabled=leader, resumed=resume)
        last_val = logger.last_values("val")  # a resume that validates no more keeps the last scores
        if resume:
            logger.message(f"resuming {run_dir} at step {step}")
        status = "interrupted"
        stop.deferred = True
        pending: list[Any] = []
        window_start, window_steps = time.perf_counter(), 0
        lost: LoaderWorkerLost | None = None
        while step < t.steps and stop.signum is None and lost is None:
            try:
                placed = next(batches)
            except LoaderWorkerLost as exc:
                if engine.process_count > 1:
                    raise  # a save is collective; the other processes fail as on any crash
                lost = exc  # the steps so far are whole: log and save them as a stop does
            else:
                pending.append(engine.train_step_placed(placed))
                step += 1
                window_steps += 1
            stopping = stop.signum is not None or lost is not None
            at = functools.partial(_due, step, t.steps)
            if (at(t.log_every) or at(t.ckpt_every) or at(t.val_every) or stopping) and pending:
                values = engine.fetch_metrics(pending)
                _check_finite(values, step - len(values) + 1, run_dir, last_ckpt)
                pending = []
                elapsed = time.perf_counter() - window_start
                rate = window_steps * t.batch_size / max(elapsed, 1e-9)
                window = window_metrics(values)
                logger.log("train", step, {**window, "images_per_s": rate})
                logger.progress(step, {"loss": f"{window['loss']:.4f}", "img/s": f"{rate:.1f}"})
                window_start, window_steps = time.perf_counter(), 0
            is_best = False
            if at(t.val_every) and data.val and not stopping:
                previews: dict[str, dict[str, np.ndarray]] = {}
                last_val = validate(engine, data.val, cfg, data.contract, previews)
                is_best = best is None or last_val[VAL_SELECT_METRIC] < best
                if is_best:
                    best, best_step = last_val[VAL_SELECT_METRIC], step
                logger.log("val", step, last_val)
                logger.log_images(step, previews)
                logger.message(f"step {step}: val " + ", ".join(f"{k}={v:.4f}" for k, v in last_val.items()))
                window_start = time.perf_counter()  # validation time is not training throughput
            # The signal is read afresh, not from ``stopping``: it may have landed during the fetch
            # or the validation above, and the step it interrupted is whole. A new best is saved
            # where it was measured, also between ``ckpt_every`` steps: else a later, worse
            # validation would leave an older checkpoint as the best.
            if (at(t.ckpt_every) or is_best or stop.signum is not None or lost is not None) and last_ckpt != step:
                engine.save_checkpoint(step, {"loader": batches.get_state(), "best": best, "best_step": best_step},
                                       is_best or not data.val)
                last_ckpt = step
        if lost is not None and stop.signum is None:  # with a signal, the worker died of it: a stop
            raise DataError(_lost_worker_message(lost, run_dir, step, cfg.data.workers))
        if stop.signum is not None:
            raise Interrupted("interrupted", stop.exit_code)
        status = "completed"
    except Interrupted as exc:
        raise Interrupted(_stopped_message(run_dir, step, last_ckpt, resume and status is None), exc.exit_code) from None
    except TrainingDiverged:
        status = "diverged"
        raise
    finally:
        try:
            engine.close()  # first: it finishes pending (async) checkpoint saves
        except Interrupted as exc:  # a second signal while the last save finishes: abandon it
            status = "interrupted"
            raise Interrupted(_stopped_message(run_dir, step, None if last_ckpt == step else last_ckpt),
                              exc.exit_code) from None
        except BaseException:
            status = "interrupted" if status == "completed" else status
            raise
        finally:
            if loader is not None:
                loader.close()
            if logger is not None:
                logger.close()
            if leader and status is not None:
                _record_end(run_dir, status, step)
    summary = {"run_dir": str(run_dir), "backend": backend_name, "steps": step,
               "best_val_" + VAL_SELECT_METRIC: best, "best_step": best_step, "last_val": last_val}
    if leader:
        runs.update_run_info(run_dir, summary=summary)
        backend.export_weights(run_dir, run_dir / runs.PORTABLE_FILE, which="best")
    return summary


def _record_end(run_dir: Path, status: str, step: int) -> None:
    """Write the final status to run.json; when a failure is already on its way out (a full disk),
    a failed write here must not replace that failure's message."""
    try:
        runs.update_run_info(run_dir, status=status, steps_done=step,
                               finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    except MrsynthError:
        if status == "completed":
            raise
