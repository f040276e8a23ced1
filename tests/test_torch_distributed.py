"""DDP on CPU (2 gloo processes) trains exactly like one process on the same global batch.

Tolerance: float32 summation order differs (DDP averages two half-batch gradients, BatchNorm
moments are all-reduced sums), so parameters after 3 AdamW steps agree to ~1e-6, checked at
rtol 1e-4 / atol 2e-5 — far below one update (lr = 1e-3 per parameter per step).
A conv bias feeding a BatchNorm has an exactly-zero true gradient, so its computed gradient is
rounding noise that Adam scales to a full +-lr step; those biases (and the running means that
follow them) are only held to the bound of STEPS updates.
"""
from __future__ import annotations

import faulthandler
import os
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mrsynth.backend import GENERATOR
from mrsynth.config import Config, config_from_dict
from torch_ref.train import TorchEngine

WORLD = 2
STEPS = 3
NORMS = ("group", "batch")
WORKER_TIMEOUT_S = 240  # a hang guard, not a speed check: a loaded 2-core machine once took > 120 s
BOOTSTRAP_S = 90  # to start an interpreter and import torch and mrsynth (6 s here beside a cohort training)
STARTED, DONE = "started", "left the process group"


def ddp_config(norm: str) -> Config:
    return config_from_dict({
        "model": {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "groups": 2, "norm": norm},
        "data": {"patch_size": [16, 16]},
        "train": {"steps": 10, "warmup_steps": 1, "lr": 1e-3, "clip_norm": 0.5},
    })


def global_batches() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(STEPS):
        t1 = rng.standard_normal((4, 16, 16, 1)).astype(np.float32)
        out.append({"t1": t1, "t2": (np.tanh(t1) + 0.1).astype(np.float32), "mask": np.ones_like(t1)})
    return out


def train(engine: TorchEngine, shard: slice) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    handles = [engine.train_step({k: v[shard] for k, v in b.items()}) for b in global_batches()]
    metrics = engine.fetch_metrics(handles)
    state = {k: v.detach().double().numpy() for k, v in engine.models[GENERATOR].state_dict().items()}
    return state, metrics


def _mark(out_dir: str, rank: int, stage: str) -> None:
    """Append a stage to this rank's log, so a hang says which stage it reached."""
    with open(Path(out_dir) / f"rank{rank}.log", "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {stage}\n")


def _worker(rank: int, out_dir: str) -> None:
    _mark(out_dir, rank, STARTED)
    # A stuck worker dumps its stack and exits, so a hang becomes a failure that says where.
    faulthandler.dump_traceback_later(WORKER_TIMEOUT_S, exit=True)
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    # File rendezvous: no TCP port to pick, so no race with other processes on the machine.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=WORKER_TIMEOUT_S))
    _mark(out_dir, rank, "joined the process group")
    try:
        half = 4 // WORLD
        for norm in NORMS:
            engine = TorchEngine(ddp_config(norm), Path(out_dir) / f"{norm}-rank{rank}")
            assert (engine.process_index, engine.process_count) == (rank, WORLD)
            state, metrics = train(engine, slice(rank * half, (rank + 1) * half))
            engine.save_checkpoint(STEPS, {}, is_best=True)
            engine.close()  # the test owns the process group: close must leave it alone
            np.savez(Path(out_dir) / f"{norm}-rank{rank}.npz", **state,
                     loss=[m["loss"] for m in metrics], grad_norm=[m["grad_norm"] for m in metrics])
            _mark(out_dir, rank, f"trained and saved {norm}")
    finally:
        dist.destroy_process_group()
        # The work is done: a slow interpreter exit on a loaded machine must not count as a hang.
        faulthandler.cancel_dump_traceback_later()
    _mark(out_dir, rank, DONE)


def _stages(out: Path, rank: int) -> list[str]:
    log = out / f"rank{rank}.log"
    return log.read_text().splitlines() if log.exists() else []


def _run_workers(out: Path) -> tuple[str, str] | None:
    """Run the DDP workers into ``out``; None when both finished, else (why, what each rank reached)
    with why ``"start"`` (a rank never reached ``_worker`` within BOOTSTRAP_S) or ``"hang"``.

    Finished means every rank logged DONE, whether or not its interpreter has exited yet: the
    results are written by then, and a lingering exit (gloo threads on a loaded machine) is
    killed rather than waited for. A worker that raises or dies fails at once through join.
    """
    context = mp.spawn(_worker, args=(str(out),), nprocs=WORLD, join=False)
    began = time.monotonic()
    try:
        while not context.join(timeout=1):
            logs = [_stages(out, r) for r in range(WORLD)]
            if all(lines and lines[-1].endswith(DONE) for lines in logs):
                return None
            waited = time.monotonic() - began
            # The hang deadline leaves a started rank's own faulthandler (WORKER_TIMEOUT_S) time to
            # fail it first, with its stack.
            if (waited > BOOTSTRAP_S and not all(logs)) or waited > BOOTSTRAP_S + WORKER_TIMEOUT_S + 15:
                reached = "; ".join(f"rank {r}: " + (lines[-1] if lines else "never reached _worker")
                                    for r, lines in enumerate(logs))
                return ("start" if not all(logs) else "hang"), f"after {waited:.0f} s, {reached}"
        return None
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    stuck = _run_workers(out)
    if stuck and stuck[0] == "start":
        # A spawned interpreter that never reached _worker hung while starting (seen once in CI
        # under -n 2: no output, no traceback), outside the training this file tests: start the
        # pair once more, and say so. A hang after a rank started fails at once.
        warnings.warn(f"DDP workers hung before starting ({stuck[1]}); started again")
        out = tmp_path_factory.mktemp("ddp-retry")
        stuck = _run_workers(out)
    if stuck:
        pytest.fail(f"DDP workers did not finish: {stuck[1]}")
    return out


@pytest.mark.parametrize("norm", NORMS)
def test_two_process_ddp_equals_one_process(ddp_results, tmp_path, norm):
    single = TorchEngine(ddp_config(norm), tmp_path)
    state, metrics = train(single, slice(None))
    for rank in range(WORLD):
        ddp = np.load(ddp_results / f"{norm}-rank{rank}.npz")
        for name, value in state.items():
            noise_only = norm == "batch" and name.endswith(("conv1.bias", "conv2.bias", "running_mean"))
            atol = 2 * STEPS * 1e-3 if noise_only else 2e-5
            np.testing.assert_allclose(ddp[name], value, rtol=1e-4, atol=atol, err_msg=f"rank {rank}: {name}")
        np.testing.assert_allclose(ddp["loss"], [m["loss"] for m in metrics], rtol=1e-5)
        np.testing.assert_allclose(ddp["grad_norm"], [m["grad_norm"] for m in metrics], rtol=1e-4)


def test_only_rank_zero_writes_checkpoints(ddp_results):
    assert (ddp_results / "group-rank0" / "checkpoints" / "best.pt").is_file()
    assert not (ddp_results / "group-rank1" / "checkpoints").exists()
