"""Orbax checkpoints of a JAX run: the last k under ``checkpoints/last``, the best under ``checkpoints/best``.

Each checkpoint is a composite of ``state`` (the train state of ``jax_impl/train_state.py``:
every model's params and BatchNorm stats and every optimizer state keyed by model name, step,
RNG key; a pytree of arrays, restored onto the caller's shardings) and ``extra`` (JSON: data
iterator state, best metric). Saves are asynchronous: device arrays are copied to host before
``save`` returns, so the next (donating) train step cannot corrupt them. Restoring reads only
arrays and JSON, never code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from mrsynth.checkpoints import checkpoint_dir, pick_checkpoint
from mrsynth.errors import CheckpointError
from mrsynth.fileio import reporting_disk_full


def _manager(directory: Path, max_to_keep: int | None, for_reading: bool) -> ocp.CheckpointManager:
    # Readers never save, so they need no async thread and must not create the directory;
    # orbax's read_only mode would log a warning per option it overrides.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if for_reading else max_to_keep,
        enable_async_checkpointing=not for_reading,
        create=not for_reading,
    )
    # orbax needs an absolute path (tensorstore rejects relative ones: runs/... fails on save).
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=("state", "extra"))


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
    except (ValueError, KeyError, FileNotFoundError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{manager.directory / str(step)}: checkpoint does not match this model/optimizer ({detail})"
        ) from None
    return restored["state"], dict(restored["extra"] or {})


class CheckpointStore:
    """The run's checkpoint managers: ``keep`` most recent, plus the single best."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = Path(directory)
        self._last = _manager(self.directory / "last", keep, for_reading=False)
        self._best = _manager(self.directory / "best", 1, for_reading=False)

    def save(self, step: int, state: Any, extra: dict[str, Any], is_best: bool) -> None:
        """Start an asynchronous save of ``state`` + ``extra`` (and as the best one if ``is_best``).

        A full disk (reported here or by :meth:`wait`, as orbax finishes in the background) is a
        one-line error; orbax finalizes a checkpoint atomically, so the earlier ones stay valid.
        """
        managers = [self._last, self._best] if is_best else [self._last]
        for manager in managers:
            with reporting_disk_full(Path(manager.directory) / str(step)):
                manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)))

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, extra) of the most recent checkpoint, or None if there is none."""
        step = self._last.latest_step()
        if step is None:
            return None
        state, extra = _restore(self._last, step, abstract_state)
        return step, state, extra

    def wait(self) -> None:
        for manager in (self._last, self._best):
            with reporting_disk_full(Path(manager.directory)):
                manager.wait_until_finished()

    def close(self) -> None:
        self._last.close()
        self._best.close()


def _latest_step(directory: Path) -> int | None:
    """The newest complete checkpoint step under ``directory`` (None when there is none)."""
    if not directory.is_dir():
        return None
    manager = _manager(directory, None, for_reading=True)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """The ``best`` or ``last`` checkpoint of a run, ``checkpoints/<kind>/<step>``
    (:func:`mrsynth.checkpoints.pick_checkpoint`: best falls back to last)."""
    def locate(kind: str) -> Path | None:
        step = _latest_step(checkpoint_dir(run_dir) / kind)
        return None if step is None else checkpoint_dir(run_dir) / kind / str(step)

    return pick_checkpoint(run_dir, which, "jax", locate)


def read_checkpoint(path: Path, abstract_state: Any) -> tuple[int, Any, dict[str, Any]]:
    """Read-only restore of the checkpoint at ``path`` (from :func:`find_checkpoint`): (step, state, extra)."""
    manager = _manager(Path(path).parent, None, for_reading=True)
    try:
        step = int(Path(path).name)
        state, extra = _restore(manager, step, abstract_state)
        return step, state, extra
    finally:
        manager.close()
