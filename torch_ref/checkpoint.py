"""Torch training checkpoints: ``run_dir/checkpoints/step_XXXXXXXX.pt`` (last k) plus ``best.pt``.

A checkpoint is a plain dict of tensors, numbers and strings, written atomically with
``torch.save`` and always read with ``torch.load(weights_only=True)``: loading a checkpoint
never executes code, whatever the file contains. Version 2 keys the state by model name:
``models`` and ``optimizers`` map e.g. ``"generator"`` to its state_dict (version 1 held one
``model`` and one ``optimizer``; it is refused with a one-line error).
"""
from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from mrsynth.checkpoints import checkpoint_dir, pick_checkpoint
from mrsynth.errors import CheckpointError
from mrsynth.fileio import atomic_path

FORMAT_NAME = "mrsynth-torch-checkpoint"
FORMAT_VERSION = 2
BEST_NAME = "best.pt"
_STEP_FILE = re.compile(r"^step_(\d{8})\.pt$")


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints in ``run_dir``, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def write_checkpoint(run_dir: Path, step: int, payload: dict[str, Any], is_best: bool, keep: int) -> Path:
    """Save ``payload`` as the step checkpoint (and best.pt); prune all but the last ``keep``.

    A full disk is a one-line error naming the file; the earlier checkpoints stay as they were.
    """
    folder = checkpoint_dir(run_dir)
    path = folder / f"step_{step:08d}.pt"
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **payload}
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)  # a file object: a failed write is an OSError with its errno
    if is_best:
        with atomic_path(folder / BEST_NAME) as tmp:
            shutil.copyfile(path, tmp)
    for _, old in step_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code; any unsafe or broken file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable torch checkpoint ({first_line})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an mrsynth torch checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('format_version')} is not supported "
            f"(this mrsynth reads {FORMAT_VERSION})"
        )
    return payload


def find_checkpoint(run_dir: Path, which: str) -> Path:
    """The ``best`` or ``last`` checkpoint file of a run (:func:`mrsynth.checkpoints.pick_checkpoint`:
    best falls back to last)."""
    def locate(kind: str) -> Path | None:
        if kind == "best":
            best = checkpoint_dir(run_dir) / BEST_NAME
            return best if best.is_file() else None
        steps = step_checkpoints(run_dir)
        return steps[-1][1] if steps else None

    return pick_checkpoint(run_dir, which, "torch", locate)
