"""The training input pipeline: an infinite, shardable, resumable stream of numpy batches.

The stream is a sequence of global sample positions 0, 1, 2, ...; position ``p`` is sample
``perm_e[p mod N]`` of epoch ``e = p div N`` (``N`` samples per epoch, ``perm_e`` drawn from
``(seed, e)``), and that sample is drawn from ``(seed, e, index)`` alone
(:func:`mrsynth.data.sampling.draw_batch` builds a batch's samples together). Global batch ``k`` holds positions ``[k G, (k + 1) G)`` for the global
batch ``G = batch_size x shard_count``; shard ``s`` takes the contiguous ``batch_size`` positions
starting at ``k G + s batch_size``. Every element is therefore a pure function of its batch
number, which makes the pipeline

- independent of the number of worker processes (grain slices elements across workers and
  reassembles them in order),
- resumable exactly: the state is the next batch number,
- shardable: the P local batches ``k`` together are the single-process global batch ``k``.

grain (``MapDataset.range(...).map(...).to_iter_dataset()`` + ``mp_prefetch``) does the
prefetching in threads/processes. Workers receive file paths of the memory-mapped cache
entries, not arrays, and open them lazily.
"""
from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grain
import numpy as np

from mrsynth.config import Config, DataConfig
from mrsynth.data.cache import open_stored
from mrsynth.data.discovery import SubjectFiles
from mrsynth.data.preprocess import Volume, load_volume
from mrsynth.data.sampling import EpochIndex, SampleAt, build_epoch_index, draw_batch
from mrsynth.errors import ConfigError, DataError

_STATE_VERSION = 1
_ENDLESS = 1 << 62  # batches in the "infinite" stream (grain needs a length)
# How grain (0.2.x) words a worker process that died without raising (killed, crashed).
_GRAIN_WORKER_DIED = re.compile(r"Worker process was terminated unexpectedly with exit code (-?\d+)")


class LoaderWorkerLost(DataError):
    """A loader worker process died (the out-of-memory killer, a crash); the batches handed out so
    far are intact and :meth:`TrainLoader.get_state` points at the first one not handed out."""

    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        if exit_code < 0:
            how = f"was killed by signal {-exit_code}"
            if -exit_code == signal.SIGKILL:
                how += " (on Linux usually the out-of-memory killer)"
        else:
            how = f"exited with code {exit_code}"
        super().__init__(f"data.workers: a loader worker process {how}")


@dataclass(frozen=True)
class _VolumeRef:
    """A volume as workers receive it: cache file paths (mmap) with the slice axis they are stored
    along, or, for in-memory volumes, arrays."""

    name: str
    paths: dict[str, str] | None
    arrays: dict[str, np.ndarray] | None
    slice_axis: int = 0

    @classmethod
    def of(cls, volume: Volume) -> _VolumeRef:
        if volume.t2 is None:
            raise DataError(f"{volume.subject}: training needs a T2 volume, this subject has none")
        arrays = {"t1": volume.t1, "t2": volume.t2, "mask": volume.mask}
        if all(isinstance(a, np.memmap) and a.filename for a in arrays.values()):
            stored_axis = int(np.argmax(volume.t1.strides))  # the cache stores the slice axis first
            paths = {k: str(a.filename) for k, a in arrays.items()}
            reopened = {k: _open_mmap(p, stored_axis) for k, p in paths.items()}
            if all(reopened[k].strides == a.strides and reopened[k].shape == a.shape for k, a in arrays.items()):
                return cls(volume.subject, paths, None, stored_axis)
        return cls(volume.subject, None, {k: np.asarray(a) for k, a in arrays.items()})

    def load(self) -> dict[str, np.ndarray]:
        if self.arrays is not None:
            return self.arrays
        assert self.paths is not None
        return {k: _open_mmap(p, self.slice_axis) for k, p in self.paths.items()}


_MMAPS: dict[str, np.ndarray] = {}  # per process: cache file -> memory map on the input grid


def _open_mmap(path: str, slice_axis: int) -> np.ndarray:
    if path not in _MMAPS:
        _MMAPS[path] = open_stored(path, slice_axis)
    return _MMAPS[path]


class _MakeBatch:
    """Local batch number -> batch dict. Picklable; holds paths and small index tables only."""

    def __init__(self, refs: list[_VolumeRef], index: EpochIndex, dims: int, data_cfg: DataConfig, *, seed: int,
                 batch_size: int, shard_index: int, shard_count: int, augment: bool) -> None:
        self.refs, self.index, self.dims, self.data_cfg = refs, index, dims, data_cfg
        self.seed, self.batch_size, self.augment = seed, batch_size, augment
        self.shard_index, self.global_batch = shard_index, batch_size * shard_count
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """Sample order of ``epoch``: a pure function of (seed, epoch)."""
        perm = self._perms.get(epoch)
        if perm is None:
            ss = np.random.SeedSequence([self.seed, epoch], spawn_key=(1,))  # distinct from sample seeds
            perm = np.random.Generator(np.random.PCG64(ss)).permutation(len(self.index))
            if len(self._perms) > 2:
                self._perms.clear()
            self._perms[epoch] = perm
        return perm

    def sample_at(self, position: int) -> SampleAt:
        epoch, offset = divmod(position, len(self.index))
        sample_index = int(self.permutation(epoch)[offset])
        row = self.index.rows[sample_index]
        volume = int(row[0])
        return SampleAt(self.refs[volume].load(), row, self.index.bboxes[volume], epoch, sample_index)

    def __call__(self, batch_number: int) -> dict[str, np.ndarray]:
        first = batch_number * self.global_batch + self.shard_index * self.batch_size
        samples = [self.sample_at(first + j) for j in range(self.batch_size)]
        return draw_batch(samples, self.dims, self.data_cfg, seed=self.seed, augment=self.augment)


class TrainLoader:
    """Iterator of channels-last float32 batches ``{"t1", "t2", "mask"}``, endless over epochs.

    ``get_state()`` / ``set_state()`` checkpoint it exactly; ``close()`` stops worker processes.
    """

    def __init__(self, make_batch: _MakeBatch, *, workers: int, prefetch: int) -> None:
        self._make_batch = make_batch
        self._workers, self._prefetch = workers, max(1, prefetch)
        self._next_batch = 0
        self._iterator: Any = None

    @property
    def buffered_batches(self) -> int:
        """Most batches the pipeline computes ahead of the consumer: the read thread's buffer,
        or, with workers, each worker's read buffer plus its output buffer."""
        return self._prefetch * (2 * self._workers if self._workers > 0 else 1)

    @property
    def samples_per_epoch(self) -> int:
        return len(self._make_batch.index)

    @property
    def epoch(self) -> int:
        """Epoch of the next sample this shard would read."""
        return (self._next_batch * self._make_batch.global_batch) // self.samples_per_epoch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = iter(self._pipeline(self._next_batch))
        try:
            batch = next(self._iterator)
        except RuntimeError as exc:
            died = _GRAIN_WORKER_DIED.search(str(exc))
            if died is None:
                raise
            self.close()  # stops the other workers now; the next call would start a new pipeline
            raise LoaderWorkerLost(int(died.group(1))) from None
        self._next_batch += 1
        if self._workers > 0:
            # Workers hand batches over in shared-memory segments that this process unlinks when
            # it frees them. Copied out here, each segment is released at once; left to the
            # caller, the last few are freed only as the interpreter exits, too late to unlink
            # (the resource tracker then reports them as leaked).
            batch = {key: np.array(value) for key, value in batch.items()}
        return batch

    def get_state(self) -> dict[str, Any]:
        mb = self._make_batch
        return {
            "version": _STATE_VERSION,
            "position": self._next_batch * mb.global_batch,  # global samples consumed
            "seed": mb.seed,
            "samples_per_epoch": self.samples_per_epoch,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mb = self._make_batch
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(f"loader state: unsupported version {state.get('version')!r}")
        if state["seed"] != mb.seed or state["samples_per_epoch"] != self.samples_per_epoch:
            raise ConfigError(
                f"loader state: saved for seed {state['seed']} with {state['samples_per_epoch']} samples per epoch, "
                f"this loader has seed {mb.seed} with {self.samples_per_epoch} (different data or config)"
            )
        if state["position"] % mb.global_batch:
            raise ConfigError(
                f"loader state: position {state['position']} is not a multiple of the global batch {mb.global_batch}"
            )
        self.close()
        self._next_batch = int(state["position"]) // mb.global_batch

    def close(self) -> None:
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _pipeline(self, start: int) -> grain.IterDataset:
        dataset = grain.MapDataset.range(start, _ENDLESS).map(self._make_batch)
        read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=self._prefetch)
        iter_dataset = dataset.to_iter_dataset(read)
        if self._workers > 0:
            _mark_absl_flags_parsed()
            options = grain.MultiprocessingOptions(num_workers=self._workers, per_worker_buffer_size=self._prefetch)
            iter_dataset = iter_dataset.mp_prefetch(options, worker_init_fn=_leave_stop_signals_to_the_trainer)
        return iter_dataset


def make_train_loader(
    volumes: list[Volume] | list[SubjectFiles],
    cfg: Config,
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    augment: bool = True,
) -> TrainLoader:
    """Loader over ``volumes`` (SubjectFiles are preprocessed through the cache first).

    ``batch_size`` is this process's local batch; the global batch is ``batch_size * shard_count``.
    """
    if not volumes:
        raise DataError("no training volumes")
    if not 0 <= shard_index < shard_count:
        raise ConfigError(f"shard_index {shard_index} must be in [0, shard_count={shard_count})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    loaded = [load_volume(v, cfg.data) if isinstance(v, SubjectFiles) else v for v in volumes]
    refs = [_VolumeRef.of(v) for v in loaded]
    index = build_epoch_index([v.mask for v in loaded], cfg.model.dims, cfg.data, [v.subject for v in loaded])
    make_batch = _MakeBatch(refs, index, cfg.model.dims, cfg.data, seed=seed, batch_size=batch_size,
                            shard_index=shard_index, shard_count=shard_count, augment=augment)
    return TrainLoader(make_batch, workers=cfg.data.workers, prefetch=cfg.data.prefetch)


def _leave_stop_signals_to_the_trainer(worker_index: int, worker_count: int) -> None:
    """In a loader worker: leave SIGINT and SIGTERM to the training process, which stops after its
    step and saves. A terminal's Ctrl-C reaches the whole process group, and so does the SIGTERM of
    ``kill -- -PGID``, Slurm or systemd; a worker killed by it would leave its shared-memory batches
    to the resource tracker's leak warning, or a run that waits on it. The training process's
    close() still stops the workers."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _mark_absl_flags_parsed() -> None:
    """grain 0.2.18 workers read absl flags and fail with UnparsedFlagAccessError when the host
    program never parsed them (fixed upstream after 0.2.18)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
