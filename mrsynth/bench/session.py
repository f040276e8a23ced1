"""The timing session both backends' bench modules build on: one engine, one placed batch.

Both engines share the benchmark verbs (``place_batch``, ``train_step_placed``) and apply the
run's ``train.precision`` to their steps and predictors themselves, so placing the synthetic
batch once, the synced steps, the loader-fed steps and the predictor are written here once; a
backend supplies only how to wait for its device and its memory figures (:class:`EngineSession`'s
abstract methods), plus optional hooks around the engine's life (``on_open``, ``release``).
"""
from __future__ import annotations

import gc
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.backend import Predictor, TrainEngine
from mrsynth.training.prefetch import PREFETCH_DEPTH, DevicePrefetch


def synthetic_batch(batch: int, size: list[int], channels: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A random channels-last batch with the model's input ``channels`` (a 2.5D model reads its
    slice's neighbours too; the T2 follows the centre slice); the step's cost does not depend on
    the values."""
    rng = np.random.default_rng(seed)
    t1 = rng.standard_normal((batch, *size, channels), dtype=np.float32)
    centre = t1[..., channels // 2:channels // 2 + 1]
    return {"t1": t1, "t2": (0.5 * centre + 0.1).astype(np.float32), "mask": np.ones_like(centre)}


class EngineSession(ABC):
    """A :class:`mrsynth.bench.backends.TrainSession` over an engine writing to a temporary run folder."""

    settings: dict[str, Any]

    def __init__(self, open_engine: Callable[[Path], TrainEngine], batch: dict[str, np.ndarray],
                 prefix: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"mrsynth-bench-{prefix}-")
        self.engine = open_engine(Path(self._tmp.name))
        self.on_open()
        self._placed = self.engine.place_batch(batch)
        self.wait(self._placed)

    @abstractmethod
    def wait(self, result: Any) -> None:
        """Return when the device has finished computing ``result`` (and the engine's update)."""

    @abstractmethod
    def memory(self) -> dict[str, float | None]:
        """Device memory figures in MiB (None where the platform does not report them)."""

    def on_open(self) -> None:
        """Called once the engine exists, before the batch is placed (e.g. to reset memory peaks)."""

    def release(self) -> None:
        """Give cached device memory back after the engine is gone (where the backend caches it)."""

    def synced_step(self) -> None:
        self.wait(self.engine.train_step_placed(self._placed))

    def feed(self, loader: Any) -> DevicePrefetch:
        """Placed batches from ``loader`` with the training loop's device prefetch."""
        return DevicePrefetch(loader, self.engine.place_batch, PREFETCH_DEPTH)

    def run_steps(self, batches: Iterator[Any], n: int) -> None:
        result = None
        for _ in range(n):
            result = self.engine.train_step_placed(next(batches))
        self.wait(result)

    def predictor(self) -> Predictor:
        return self.engine.predictor()

    def close(self) -> None:
        self.engine.close()
        del self.engine, self._placed
        gc.collect()
        self.release()
        self._tmp.cleanup()
