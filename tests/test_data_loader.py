"""Sampling, augmentation and the grain loader: purity, workers, resume, sharding."""
from __future__ import annotations

import dataclasses

import itertools
import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from mrsynth.config import Config, DataConfig, ModelConfig
from mrsynth.data.discovery import discover_pairs
from mrsynth.data.io import Geometry
from mrsynth.data.loader import LoaderWorkerLost, make_train_loader
from mrsynth.data.preprocess import NormStats, Volume
from mrsynth.data.sampling import build_epoch_index, draw_sample
from mrsynth.training.prefetch import DevicePrefetch

from data_fixtures import TINY_SHAPE, synthetic_head

AUGMENT = dict(flip_prob=0.5, rotate_deg=10.0, scale_range=0.1, gamma_range=0.3, noise_std=0.05)


def _volumes(n: int = 3) -> list[Volume]:
    """In-memory volumes whose T2 is exactly 2 x T1 (so spatial alignment is checkable)."""
    out = []
    for i in range(n):
        head = synthetic_head(seed=i)
        t1 = head["t1"] / 100.0
        out.append(Volume(f"S{i}", t1, 2.0 * t1, head["mask"], None, NormStats(0.0, 1.0), NormStats(0.0, 1.0),
                          Geometry(np.eye(4), TINY_SHAPE, b"")))
    return out


def _config(dims: int = 2, **data) -> Config:
    patch = (16, 16) if dims == 2 else (16, 16, 8)
    return Config(data=DataConfig(patch_size=patch, **data), model=ModelConfig(dims=dims, depth=2, channel_mults=(1, 2, 4)))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_slices_skip_background_and_3d_epoch_length():
    volumes = _volumes(2)
    cfg = _config(min_foreground=0.2, slice_axis=2).data
    index = build_epoch_index([v.mask for v in volumes], 2, cfg)
    for v, s, axis in index.rows:
        assert axis == 2 and volumes[v].mask[:, :, s].mean() >= 0.2
    assert 0 < len(index) < 2 * TINY_SHAPE[2]
    index_3d = build_epoch_index([v.mask for v in volumes], 3, DataConfig(patches_per_volume=5))
    assert len(index_3d) == 10 and (index_3d.rows[:, 1:] == -1).all()


def test_all_planes_sample_slices_along_every_axis():
    """data.planes: all adds the slices along the other two axes (same foreground rule) to the
    epoch, and a sample of an axis-0 row is that sagittal slice, cropped."""
    volumes = _volumes(1)
    cfg = _config(min_foreground=0.2, planes="all", flip_prob=0.0).data
    index = build_epoch_index([volumes[0].mask], 2, cfg)
    one_axis = {axis: build_epoch_index([volumes[0].mask], 2, dataclasses.replace(cfg, planes="slice_axis",
                                                                                   slice_axis=axis))
                for axis in range(3)}
    for axis in range(3):
        np.testing.assert_array_equal(index.rows[index.rows[:, 2] == axis], one_axis[axis].rows)
    row = index.rows[np.flatnonzero(index.rows[:, 2] == 0)[0]]
    arrays = {"t1": volumes[0].t1, "t2": volumes[0].t2, "mask": volumes[0].mask}
    sample = draw_sample(arrays, row, index.bboxes[0], 2, cfg, seed=0, epoch=0, index=0, augment=False)
    plane = volumes[0].t1[int(row[1])]
    assert sample["t1"].shape == (16, 16, 1)
    assert any(np.array_equal(sample["t1"][..., 0], plane[i:i + 16, j:j + 16])
               for i in range(plane.shape[0] - 15) for j in range(plane.shape[1] - 15))


@pytest.mark.parametrize("dims", [2, 3])
def test_sample_is_a_pure_function_and_augmentation_keeps_the_pair_aligned(dims):
    volumes = _volumes(1)
    cfg = _config(dims, **{**AUGMENT, "gamma_range": 0.0, "noise_std": 0.0}).data
    index = build_epoch_index([volumes[0].mask], dims, cfg)
    arrays = {"t1": volumes[0].t1, "t2": volumes[0].t2, "mask": volumes[0].mask}
    samples = [draw_sample(arrays, index.rows[i % len(index)], index.bboxes[0], dims, cfg, seed=1, epoch=0, index=i)
               for i in range(6)]
    again = draw_sample(arrays, index.rows[0], index.bboxes[0], dims, cfg, seed=1, epoch=0, index=0)
    other_epoch = draw_sample(arrays, index.rows[0], index.bboxes[0], dims, cfg, seed=1, epoch=1, index=0)
    assert _same(samples[0], again) and not _same(samples[0], other_epoch)
    for s in samples:
        assert s["t1"].shape == (*cfg.patch_size, 1) and s["t1"].dtype == np.float32
        assert np.allclose(s["t2"], 2.0 * s["t1"], atol=1e-5)  # identical spatial transform (linear)
        assert set(np.unique(s["mask"])) <= {0.0, 1.0}  # nearest for the mask


def test_intensity_augmentation_touches_t1_only_inside_the_mask():
    volume = _volumes(1)[0]
    cfg = _config(2, **AUGMENT).data
    index = build_epoch_index([volume.mask], 2, cfg)
    arrays = {"t1": volume.t1, "t2": volume.t2, "mask": volume.mask}
    plain_cfg = _config(2, **{**AUGMENT, "gamma_range": 0.0, "noise_std": 0.0}).data
    row = index.rows[len(index) // 2]
    augmented = draw_sample(arrays, row, index.bboxes[0], 2, cfg, seed=0, epoch=0, index=3)
    plain = draw_sample(arrays, row, index.bboxes[0], 2, plain_cfg, seed=0, epoch=0, index=3)
    assert np.array_equal(augmented["t2"], plain["t2"]) and np.array_equal(augmented["mask"], plain["mask"])
    inside = plain["mask"] > 0
    assert not np.allclose(augmented["t1"][inside], plain["t1"][inside])
    assert np.array_equal(augmented["t1"][~inside], plain["t1"][~inside])


def test_batches_are_channels_last_float32_and_epochs_reshuffle():
    cfg = _config(2)
    loader = make_train_loader(_volumes(2), cfg, batch_size=4, seed=0)
    batch = next(loader)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: ((4, 16, 16, 1), np.float32) for k in ("t1", "t2", "mask")
    }
    n = loader.samples_per_epoch
    first_epoch = loader._make_batch.permutation(0)
    assert sorted(first_epoch) == list(range(n))
    assert not np.array_equal(first_epoch, loader._make_batch.permutation(1))


def test_resume_continues_the_exact_sequence():
    cfg = _config(2, **AUGMENT)
    loader = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    reference = [next(loader) for _ in range(12)]  # crosses an epoch boundary
    assert loader.samples_per_epoch < 12 * 8
    partial = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    for _ in range(7):
        next(partial)
    state = json.loads(json.dumps(partial.get_state()))
    resumed = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    resumed.set_state(state)
    for expected in reference[7:]:
        assert _same(next(resumed), expected)


def test_resume_from_the_device_prefetch_state_continues_the_exact_sequence():
    """The training loop checkpoints the prefetcher's state: the next batch the step consumes,
    although the prefetcher has already pulled (and placed) the next ``depth`` ones."""
    cfg = _config(2, **AUGMENT)
    reference = list(itertools.islice(make_train_loader(_volumes(2), cfg, batch_size=8, seed=5), 10))
    placed: list[int] = []
    loader = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    batches = DevicePrefetch(loader, lambda batch: (placed.append(1), batch)[1], depth=2)
    for expected in reference[:4]:
        assert _same(next(batches), expected)
    assert len(placed) == 6 and loader.get_state()["position"] == 6 * 8  # two batches ahead
    state = json.loads(json.dumps(batches.get_state()))
    assert state["position"] == 4 * 8
    resumed_loader = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    resumed_loader.set_state(state)
    resumed = DevicePrefetch(resumed_loader, lambda batch: batch, depth=2)
    for expected in reference[4:]:
        assert _same(next(resumed), expected)


class LosingLoader:
    """A loader whose worker process is lost (as :class:`LoaderWorkerLost`) at call ``lose_at``."""

    def __init__(self, inner, lose_at: int):
        self.inner, self.lose_at, self.count = inner, lose_at, 0

    def __next__(self):
        self.count += 1
        if self.count == self.lose_at:
            raise LoaderWorkerLost(-signal.SIGKILL)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()


def test_device_prefetch_state_stays_at_the_batch_it_could_not_hand_out():
    """The prefetcher takes batch n off its queue, then asks the loader for batch n + depth; when
    that fails, batch n never reached the caller, so a checkpoint must resume at it."""
    cfg = _config(2, **AUGMENT)
    reference = list(itertools.islice(make_train_loader(_volumes(2), cfg, batch_size=8, seed=5), 6))
    batches = DevicePrefetch(LosingLoader(make_train_loader(_volumes(2), cfg, batch_size=8, seed=5), 6),
                             lambda batch: batch, depth=2)
    for expected in reference[:3]:
        assert _same(next(batches), expected)
    with pytest.raises(LoaderWorkerLost):
        next(batches)  # would hand out batch 3; the loader fails on batch 5
    state = json.loads(json.dumps(batches.get_state()))
    assert state["position"] == 3 * 8
    resumed = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    resumed.set_state(state)
    for expected in reference[3:]:
        assert _same(next(resumed), expected)


class KillingBatches:
    """The loader's batch maker, except that the worker process asked for batch ``fatal`` kills
    itself with SIGKILL, as the out-of-memory killer would (never the test's own process)."""

    def __init__(self, inner, fatal: int):
        self.inner, self.fatal, self.parent = inner, fatal, os.getpid()
        self.index, self.global_batch, self.seed = inner.index, inner.global_batch, inner.seed

    def __call__(self, batch_number: int):
        if batch_number == self.fatal and os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(batch_number)


def test_a_killed_worker_is_one_error_and_the_state_points_at_the_first_batch_not_handed_out():
    """grain reports a dead worker as a RuntimeError with a traceback; the loader turns it into one
    user-facing error that says what happened, and its state still resumes exactly."""
    cfg = _config(2, **AUGMENT)
    reference = list(itertools.islice(make_train_loader(_volumes(2), cfg, batch_size=8, seed=5), 3))
    cfg.data.workers = 1
    loader = make_train_loader(_volumes(2), cfg, batch_size=8, seed=5)
    loader._make_batch = KillingBatches(loader._make_batch, fatal=3)
    received = []
    with loader, pytest.raises(LoaderWorkerLost) as lost:
        for _ in range(5):
            received.append(next(loader))
    assert lost.value.exit_code == -signal.SIGKILL
    assert str(lost.value) == ("data.workers: a loader worker process was killed by signal 9 "
                               "(on Linux usually the out-of-memory killer)")
    assert len(received) <= 3 and all(_same(a, b) for a, b in zip(received, reference))
    assert loader.get_state()["position"] == len(received) * 8


@pytest.mark.parametrize("dims", [2, 3])
def test_shards_partition_the_global_batch(dims):
    cfg = _config(dims, **AUGMENT)
    volumes = _volumes(2)
    single = make_train_loader(volumes, cfg, batch_size=6, seed=2)
    shards = [make_train_loader(volumes, cfg, batch_size=2, seed=2, shard_index=s, shard_count=3) for s in range(3)]
    for k in range(3):
        global_batch = next(single)
        local = [next(sh) for sh in shards]
        union = {key: np.concatenate([b[key] for b in local]) for key in global_batch}
        as_set = lambda arr: sorted(x.tobytes() for x in arr)  # noqa: E731
        for key in global_batch:
            assert as_set(union[key]) == as_set(global_batch[key])


def test_worker_count_does_not_change_batches(tmp_path, ixi_head_dir):
    data = DataConfig(source="ixi", root=str(ixi_head_dir(2)), cache_dir=str(tmp_path / "cache"),
                      patch_size=(16, 16), **AUGMENT)
    cfg = Config(data=data, model=ModelConfig(dims=2, depth=2, channel_mults=(1, 2, 4)))
    pairs = discover_pairs(data)
    produced = {}
    for workers in (0, 2):
        cfg.data.workers = workers
        with make_train_loader(pairs, cfg, batch_size=4, seed=9) as loader:
            assert all(ref.paths is not None for ref in loader._make_batch.refs)  # workers get mmap paths
            produced[workers] = [next(loader) for _ in range(4)]
    assert all(_same(a, b) for a, b in zip(produced[0], produced[2]))


def test_context_slices_are_neighbours_transformed_together():
    """2.5D samples: channel c is slice centre + c - k (edges repeated), cropped and flipped
    like the T2, and one intensity draw (here gamma) shared by all channels."""
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 2.0, size=(20, 24)).astype(np.float32)
    depth = 6
    arrays = {"t1": np.stack([base * (i + 1) for i in range(depth)], axis=-1),  # slice i = (i + 1) x base
              "t2": np.stack([2.0 * base] * depth, axis=-1), "mask": np.ones((20, 24, depth), np.float32)}
    cfg = _config(slice_axis=2, context_slices=2, flip_prob=1.0, min_foreground=0.0).data
    index = build_epoch_index([arrays["mask"]], 2, cfg)
    for row in index.rows[[0, 3, depth - 1]]:
        neighbours = np.clip(np.arange(row[1] - 2, row[1] + 3), 0, depth - 1)
        plain = draw_sample(arrays, row, index.bboxes[0], 2, cfg, seed=3, epoch=0, index=int(row[1]))
        assert plain["t1"].shape == (*cfg.patch_size, 5) and plain["t2"].shape == plain["mask"].shape == (*cfg.patch_size, 1)
        for c, s in enumerate(neighbours):
            np.testing.assert_allclose(plain["t1"][..., c], (s + 1) / 2.0 * plain["t2"][..., 0], rtol=1e-6)
        gamma = draw_sample(arrays, row, index.bboxes[0], 2, replace(cfg, gamma_range=0.5), seed=3, epoch=0,
                            index=int(row[1]))
        per_slice = gamma["t1"] / (neighbours + 1.0)  # the same curve on every channel
        assert not np.allclose(gamma["t1"], plain["t1"])
        np.testing.assert_allclose(per_slice, per_slice[..., :1].repeat(5, axis=-1), rtol=1e-5)
