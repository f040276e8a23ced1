"""Device prefetch: the next batches already on the device while a step runs, resume still exact.

The loop takes placed batches from :class:`DevicePrefetch` instead of numpy batches from the
loader. After handing out batch ``n`` it places batches ``n + 1 .. n + depth`` (the engines'
``place_batch``: an asynchronous ``device_put`` in JAX, a pinned non-blocking copy in torch on
CUDA), so their transfers overlap step ``n``. The prefetcher is ahead of the loop, so the
loader's own state is not what a checkpoint must store: :meth:`get_state` returns the loader
state recorded before the first batch still waiting here, i.e. the next batch the step will
consume; a resumed run reads that batch again and drops nothing.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from mrsynth.backend import Batch

PREFETCH_DEPTH = 2  # batches placed on the device ahead of the step the training loop runs


class StatefulLoader(Protocol):
    """The loader verbs the prefetcher needs (:class:`mrsynth.data.loader.TrainLoader`)."""

    def __next__(self) -> Batch: ...

    def get_state(self) -> dict[str, Any]: ...


class DevicePrefetch:
    """Iterator of placed batches, ``depth`` of them placed ahead of the one being consumed."""

    def __init__(self, loader: StatefulLoader, place: Callable[[Batch], Any], depth: int = 2) -> None:
        self._loader, self._place, self.depth = loader, place, depth
        self._waiting: deque[tuple[dict[str, Any], Any]] = deque()  # (loader state before it, placed batch)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._fill(1)
        state, placed = self._waiting.popleft()
        try:
            self._fill(self.depth)  # issued before the caller's step: they transfer while it runs
        except BaseException:
            # The caller never receives this batch, so get_state() must still point at it.
            self._waiting.appendleft((state, placed))
            raise
        return placed

    def get_state(self) -> dict[str, Any]:
        """The loader state at the next batch a step will consume (not the prefetched ones)."""
        return self._waiting[0][0] if self._waiting else self._loader.get_state()

    def _fill(self, count: int) -> None:
        while len(self._waiting) < count:
            state = self._loader.get_state()
            self._waiting.append((state, self._place(next(self._loader))))
