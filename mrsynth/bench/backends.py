"""What each backend's ``bench`` module supplies, and loading it by name (lazily, like backends).

``jax_impl/bench.py`` and ``torch_ref/bench.py`` build their session from the backend's own
engine (model, optimizer and compiled step exactly as training runs them) and add only the
timing-specific parts: device-resident batches, synchronization, precision switches, memory.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from mrsynth.backend import Batch, Predictor
from mrsynth.config import Config
from mrsynth.errors import MrsynthError

from mrsynth.bench.variants import Variant

BENCH_MODULES = {"jax": "jax_impl.bench", "torch": "torch_ref.bench"}


class TrainSession(Protocol):
    """One backend's engine for one (case, variant), with timing hooks."""

    settings: dict[str, Any]  # what actually ran (device, precision, compile, channels_last, ...)

    def first_step(self) -> float:
        """Seconds of the first step on the synthetic batch (compile / autotune included), synced."""
        ...

    def timed_steps(self, n: int) -> list[float]:
        """Seconds of each of ``n`` steps on the device-resident synthetic batch, synced per step."""
        ...

    def pipeline_seconds(self, batches: Iterator[Batch], n: int) -> float:
        """Wall seconds of ``n`` normal ``train_step`` calls fed from ``batches``; one sync at the end."""
        ...

    def predictor(self) -> Predictor:
        """Eval-mode predictor of the current parameters, under the variant's precision."""
        ...

    def memory(self) -> dict[str, float | None]:
        """Device memory figures in MiB (None where the platform does not report them)."""
        ...

    def close(self) -> None: ...


class BackendBench(Protocol):
    name: str

    def device_info(self) -> dict[str, Any]:
        """Device kind/name, count, platform, CUDA/cuDNN/driver versions where available."""
        ...

    def matmul_tflops(self, precision: str, size: int) -> float:
        """Achieved TFLOP/s of a large square matmul at ``precision`` (fp32 | tf32 | bf16)."""
        ...

    def open_session(self, cfg: Config, variant: Variant, batch: dict[str, np.ndarray]) -> TrainSession:
        """An engine on one device with ``batch`` already placed on it."""
        ...


def load_bench(name: str) -> BackendBench:
    """Import ``<backend>.bench`` and instantiate it; a clear error when the framework is missing."""
    if name not in BENCH_MODULES:
        raise MrsynthError(f"unknown backend {name!r} (choose from {', '.join(BENCH_MODULES)})")
    try:
        module = importlib.import_module(BENCH_MODULES[name])
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root in {"jax", "jaxlib", "flax", "optax", "orbax", "torch"}:
            raise MrsynthError(f"backend {name!r} needs {root}, which is not installed") from None
        raise
    return module.create_bench()
