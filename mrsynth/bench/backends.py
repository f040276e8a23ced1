"""What each backend's ``bench`` module supplies, and loading it by name (lazily, like backends).

``jax_impl/bench.py`` and ``torch_ref/bench.py`` build their session from the backend's own
engine (model, optimizer and compiled step exactly as training runs them, at the variant's
precision, which the engine applies as in training) on the shared
:class:`mrsynth.bench.session.EngineSession`, and add only the backend-specific timing parts:
synchronization, memory figures.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import time

import numpy as np

from mrsynth.backend import Predictor, import_backend_module
from mrsynth.config import Config

from mrsynth.bench.settings import BenchSettings
from mrsynth.training.prefetch import PREFETCH_DEPTH

BENCH_MODULES = {"jax": "jax_impl.bench", "torch": "torch_ref.bench"}


class TrainSession(Protocol):
    """One backend's engine for one (case, variant), with timing hooks."""

    settings: dict[str, Any]  # what actually ran (device, precision, compile, channels_last, ...)

    def synced_step(self) -> None:
        """One step on the device-resident synthetic batch; returns when the device is done."""
        ...

    def feed(self, loader: Any) -> Iterator[Any]:
        """Placed batches from ``loader``, prefetched to the device as the training loop does."""
        ...

    def run_steps(self, batches: Iterator[Any], n: int) -> None:
        """``n`` training steps on placed batches from :meth:`feed`; one device sync at the end."""
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

    def configure(self, settings: BenchSettings) -> None:
        """Apply process-wide settings this backend reads (e.g. torch CPU threads)."""
        ...

    def device_info(self) -> dict[str, Any]:
        """Device kind/name, count, platform, CUDA/cuDNN/driver versions where available."""
        ...

    def matmul_tflops(self, precision: str, size: int) -> float:
        """Achieved TFLOP/s of a large square matmul at the named ``precision`` (float32 | tf32 | bfloat16)."""
        ...

    def open_session(self, cfg: Config, batch: dict[str, np.ndarray]) -> TrainSession:
        """An engine on one device with ``batch`` already placed on it (``cfg`` holds the variant's
        ``train`` settings, its precision included)."""
        ...


def load_bench(name: str) -> BackendBench:
    """Import ``<backend>.bench`` and instantiate it; a clear error when the framework is missing."""
    return import_backend_module(name, BENCH_MODULES).create_bench()


def first_step_seconds(session: TrainSession) -> float:
    """Seconds of the first step (compile / autotune included)."""
    start = time.perf_counter()
    session.synced_step()
    return time.perf_counter() - start


def step_seconds(session: TrainSession, n: int) -> list[float]:
    """Seconds of each of ``n`` synced steps on the device-resident batch."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        session.synced_step()
        times.append(time.perf_counter() - start)
    return times


def scaling_times(session: TrainSession, warmup: int, steps: int) -> dict[str, Any]:
    """A scaling row's timings: the first step, then ``steps`` synced steps after ``warmup``."""
    first = first_step_seconds(session)
    step_seconds(session, warmup)
    return {"first_step_s": first, "step_s": step_seconds(session, steps)}


def pipeline_window(buffered: int, steps: int) -> tuple[int, int]:
    """(untimed steps, timed steps) of a pipeline measurement: first drain what the loader and
    the device prefetch hold, then time at least ``steps`` and more steps than they can hold, so
    the rate cannot come from the buffers."""
    ahead = buffered + PREFETCH_DEPTH
    return ahead, max(steps, ahead + 1)


def pipeline_seconds(session: TrainSession, loader: Any, drain: int, steps: int) -> float:
    """Wall seconds of ``steps`` training steps fed by the real loader through the training
    loop's device prefetch, after ``drain`` untimed ones (the end-to-end rate)."""
    batches = session.feed(loader)
    session.run_steps(batches, drain)
    start = time.perf_counter()
    session.run_steps(batches, steps)
    return time.perf_counter() - start


def median_seconds(call: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls of a synced ``call`` after ``warmup`` untimed ones
    (the first compiles)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_matmul_tflops(call: Callable[[], None], size: int, repeats: int = 10) -> float:
    """TFLOP/s of a synced square ``size`` matmul ``call``: median of ``repeats`` after one warm-up."""
    return 2 * size**3 / median_seconds(call, repeats) / 1e12
