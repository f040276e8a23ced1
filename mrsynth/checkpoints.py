"""Which checkpoint of a run directory predict, evaluate and export read, the same in both backends.

``best`` is the checkpoint with the best validation score; a run can lack one (stopped before its
first validation, or no validation fell on a checkpoint step), and then ``best`` falls back to
the newest checkpoint, so a finished run always exports. A run without any checkpoint is a
one-line error naming its checkpoints folder. What a backend's ``load_run_model`` returns is a
:class:`LoadedRun`, whose ``checkpoint`` says which one was read.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mrsynth.config import Config
from mrsynth.errors import CheckpointError

CHOICES = ("best", "last")
FOLDER = "checkpoints"

Found = TypeVar("Found")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / FOLDER


def pick_checkpoint(run_dir: Path, which: str, framework: str,
                    locate: Callable[[str], Found | None]) -> Found:
    """``locate(kind)`` for ``which``, or for ``last`` when ``which`` is ``best`` and it finds none.

    ``locate`` is the backend's lookup of its newest complete checkpoint of a kind (best | last).
    """
    if which not in CHOICES:
        raise CheckpointError(f"{run_dir}: unknown checkpoint {which!r} (choose best or last)")
    for kind in ("best", "last") if which == "best" else ("last",):
        found = locate(kind)
        if found is not None:
            return found
    raise CheckpointError(f"{checkpoint_dir(run_dir)}: no {framework} checkpoints found")


@dataclass(frozen=True)
class LoadedRun:
    """A run's network restored from one checkpoint, in eval mode on the host.

    ``checkpoint`` is the checkpoint read, relative to the run's checkpoints folder (torch
    ``best.pt``, JAX ``best/120``): the last one where ``best`` fell back.
    """

    model: Any  # the backend's network (flax nnx.Module / torch nn.Module)
    config: Config
    step: int
    checkpoint: str

    def provenance(self) -> dict[str, Any]:
        """What a portable file exported from this checkpoint records about it."""
        return {"step": self.step, "checkpoint_file": self.checkpoint}
