"""Training stops cleanly and resumes exactly: signals, a full disk, leftovers, resume checks, locks.

Signals are sent to a real ``run.py train`` process. To make the moment deterministic without
a product option, the process runs through a small wrapper (written below) whose loader holds
the fifth batch until the product's signal handler has run: the run always stops at step 5.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mrsynth.cli import main
from mrsynth.config import load_config
from mrsynth.data.loader import LoaderWorkerLost
from mrsynth.errors import Interrupted, MrsynthError
from mrsynth.fileio import disk_full_error
from mrsynth import runs
from mrsynth.training import loop
from mrsynth.training.prefetch import PREFETCH_DEPTH
from test_training_loop import CrashingLoader, portable_last, tiny_overrides

REPO = Path(__file__).resolve().parents[1]

HOLDING_WRAPPER = '''
import sys, time
from pathlib import Path
from mrsynth import cli
from mrsynth.training import loop
from mrsynth.training.prefetch import PREFETCH_DEPTH

ready, received = Path(sys.argv[1]), []
handle = loop.StopSignals._handle
loop.StopSignals._handle = lambda self, signum, frame: (received.append(signum), handle(self, signum, frame))
make = loop.make_train_loader

class Holding:
    def __init__(self, inner):
        self.inner, self.count = inner, 0
    def __iter__(self):
        return self
    def __next__(self):
        self.count += 1
        if self.count == 5 + loop.PREFETCH_DEPTH:  # the prefetcher asks for it as step 5 is about to run
            ready.touch()
            while not received:
                time.sleep(0.01)
        return next(self.inner)
    def __getattr__(self, name):
        return getattr(self.inner, name)

loop.make_train_loader = lambda *a, **k: Holding(make(*a, **k))
if __name__ == "__main__":  # spawned loader workers import this file too
    sys.exit(cli.main(sys.argv[2:]))
'''


def sets(tmp: Path) -> list[str]:
    return [arg for o in tiny_overrides(tmp) for arg in ("--set", o)]


def run_info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def assert_same_weights(backend: str, a: Path, b: Path, tmp: Path) -> None:
    want = portable_last(backend, a, tmp / "a.safetensors")
    got = portable_last(backend, b, tmp / "b.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


class SignallingLoader(CrashingLoader):
    """Sends this process SIGINT when the loop's device prefetch asks for the batch PREFETCH_DEPTH
    ahead of step 5, i.e. as step 5 is about to run (the run then stops at step 5)."""

    def __next__(self):
        if self.count == 4 + PREFETCH_DEPTH:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__next__()


def check_resume_equals_uninterrupted(backend: str, run: Path, full: Path, tmp: Path, capsys,
                                      stopped_at: int = 5) -> None:
    """A run stopped at ``stopped_at``: flags that contradict it are refused, a resume matches
    ``full``, the uninterrupted run of the same settings."""
    info = run_info(run)
    assert info["status"] == "interrupted" and info["steps_done"] == stopped_at
    other = "torch" if backend == "jax" else "jax"
    for flags, key in ((["--backend", other], "--backend"), (["--set", "train.lr=0.5"], "train.lr")):
        capsys.readouterr()
        assert main(["train", "--resume", str(run), *flags]) == 1
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and err_lines[0].startswith(f"error: {key}"), err_lines
    assert run_info(run) == info
    assert main(["train", "--resume", str(run)]) == 0
    assert run_info(run)["status"] == "completed"
    assert_same_weights(backend, full, run, tmp)


@pytest.mark.slow
def test_sigterm_to_a_torch_training_process_saves_and_resume_equals_uninterrupted(tmp_path, capsys, tiny_run):
    home, full = tiny_run("torch")  # the uninterrupted run of the same settings (conftest.py)
    wrapper, ready, run = tmp_path / "hold.py", tmp_path / "ready", tmp_path / "run"
    wrapper.write_text(HOLDING_WRAPPER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(wrapper), str(ready), "train", "--backend", "torch",
                             "--run-dir", str(run), *sets(home)],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    while not ready.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == f"interrupted at step 5; resume with: python run.py train --resume {run}"
    check_resume_equals_uninterrupted("torch", run, full, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_the_process_group_stops_a_run_with_loader_workers_as_a_stop(tmp_path, tiny_run, signum, code):
    """A terminal's Ctrl-C, and the SIGTERM of ``kill -- -PGID``, Slurm or systemd, reach grain's
    worker processes too; they leave it to the training process, so the run stops at step 5 with
    its one line and 130 / 143, not as a lost worker, and no worker's shared memory is left to the
    resource tracker's leak warning."""
    home, _ = tiny_run("jax")
    wrapper, ready, run = tmp_path / "hold.py", tmp_path / "ready", tmp_path / "run"
    wrapper.write_text(HOLDING_WRAPPER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(wrapper), str(ready), "train", "--backend", "jax", "--no-progress",
                             "--run-dir", str(run), *sets(home), "--set", "data.workers=2"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    while not ready.exists() and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "error:" not in err and "Traceback" not in err and "leaked" not in err, err
    assert err.strip().splitlines()[-1] == f"interrupted at step 5; resume with: python run.py train --resume {run}"
    info = run_info(run)
    assert info["status"] == "interrupted" and info["steps_done"] == 5


def stop_a_jax_run(wrapper: type, exit_code: int, tmp_path: Path, monkeypatch, capsys,
                   tiny_run) -> tuple[Path, Path, str]:
    """The tiny JAX run in this process, its loader wrapped in ``wrapper``, until it stops with
    ``exit_code``; returns the uninterrupted run of the same settings, the stopped run and stderr."""
    home, full = tiny_run("jax")  # the uninterrupted run of the same settings (conftest.py)
    real_make = loop.make_train_loader
    monkeypatch.setattr(loop, "make_train_loader", lambda *a, **k: wrapper(real_make(*a, **k), 99))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--backend", "jax", "--run-dir", str(run), *sets(home)]) == exit_code
    err = capsys.readouterr().err
    monkeypatch.undo()
    return full, run, err


@pytest.mark.slow
def test_sigint_during_jax_training_saves_and_resume_equals_uninterrupted(tmp_path, monkeypatch, capsys, tiny_run):
    full, run, err = stop_a_jax_run(SignallingLoader, 130, tmp_path, monkeypatch, capsys, tiny_run)
    assert err.strip().splitlines()[-1] == f"interrupted at step 5; resume with: python run.py train --resume {run}"
    check_resume_equals_uninterrupted("jax", run, full, tmp_path, capsys)


@pytest.mark.slow
def test_a_signal_while_the_loop_waits_for_a_step_saves_that_step(tmp_path, monkeypatch, capsys, tiny_run):
    """The loop waits for the device in fetch_metrics, the likeliest moment for a Ctrl-C to land:
    the stop still saves the step it was waiting for (step 4, the third fetch: train.log_every=2,
    and step 3 validates and saves)."""
    from jax_impl.train import JaxEngine

    tiny_run("jax")  # trained before fetch_metrics is patched
    real_fetch, calls = JaxEngine.fetch_metrics, []

    def fetch_then_signal(self, handles):
        calls.append(len(handles))
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_fetch(self, handles)

    monkeypatch.setattr(JaxEngine, "fetch_metrics", fetch_then_signal)
    full, run, err = stop_a_jax_run(CrashingLoader, 130, tmp_path, monkeypatch, capsys, tiny_run)
    assert err.strip().splitlines()[-1] == f"interrupted at step 4; resume with: python run.py train --resume {run}"
    check_resume_equals_uninterrupted("jax", run, full, tmp_path, capsys, stopped_at=4)


class LosingLoader(CrashingLoader):
    """Its worker process is lost (as the loader reports a SIGKILLed grain worker) when the loop's
    device prefetch asks for the batch PREFETCH_DEPTH ahead of step 6: steps 1 to 5 are whole."""

    def __next__(self):
        if self.count == 5 + PREFETCH_DEPTH:
            raise LoaderWorkerLost(-signal.SIGKILL)
        return super().__next__()


@pytest.mark.slow
def test_a_lost_loader_worker_saves_the_whole_steps_and_resume_equals_uninterrupted(tmp_path, monkeypatch,
                                                                                    capsys, tiny_run):
    full, run, err = stop_a_jax_run(LosingLoader, 1, tmp_path, monkeypatch, capsys, tiny_run)
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: data.workers: a loader worker process was killed by signal 9 (on Linux usually the "
        f"out-of-memory killer); saved step 5; resume with: python run.py train --resume {run} --set data.workers=0")
    check_resume_equals_uninterrupted("jax", run, full, tmp_path, capsys)


@pytest.mark.slow
def test_second_signal_abandons_the_save_and_resume_redoes_the_steps_once(tmp_path, monkeypatch):
    """torch: SIGINT at step 5, a second one while step 5 is being saved; step 3 stays valid."""
    import torch_ref.checkpoint as ckpt

    cfg = load_config(None, tiny_overrides(tmp_path))
    run = tmp_path / "run"
    real_make, real_save = loop.make_train_loader, ckpt.torch.save

    def save(payload, handle):
        if payload["step"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        real_save(payload, handle)

    monkeypatch.setattr(loop, "make_train_loader", lambda *a, **k: SignallingLoader(real_make(*a, **k), 99))
    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(Interrupted, match="interrupted at step 5 .last checkpoint: step 3.; resume with") as exc:
        loop.train(cfg, "torch", run)
    assert exc.value.exit_code == 130
    monkeypatch.undo()
    assert [s for s, _ in ckpt.step_checkpoints(run)] == [3]
    assert not (run / ".lock").exists()
    assert run_info(run)["status"] == "interrupted"
    leftover = run / "checkpoints" / ".step_00000005.x1y2.tmp.pt"
    leftover.write_bytes(b"half")  # what a kill during the write leaves

    assert loop.train(cfg, "torch", run, resume=True)["steps"] == 6
    assert not leftover.exists()
    train_steps = [e["step"] for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if e["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 6
    before = run_info(run)["summary"]["last_val"]
    assert before and loop.train(cfg, "torch", run, resume=True)["last_val"] == before  # nothing left to do


ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def failing_torch_save(monkeypatch, at_step: int) -> None:
    """torch.save as on a disk that fills up at checkpoint ``at_step``."""
    import torch_ref.checkpoint as ckpt

    real_save = ckpt.torch.save

    def save(payload, handle):
        if payload["step"] == at_step:
            raise ENOSPC
        real_save(payload, handle)

    monkeypatch.setattr(ckpt.torch, "save", save)


@pytest.mark.slow
def test_full_disk_stops_training_with_one_line_and_keeps_earlier_checkpoints(tmp_path, monkeypatch, capsys):
    failing_torch_save(monkeypatch, at_step=6)
    run = tmp_path / "run"
    assert main(["train", "--backend", "torch", "--run-dir", str(run), *sets(tmp_path)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'checkpoints' / 'step_00000006.pt'}: "
                                               "no space left on device ("), err
    assert err[0].endswith(" MiB free)")
    monkeypatch.undo()
    assert run_info(run)["status"] == "interrupted"
    assert all(np.isfinite(w).all() for w in portable_last("torch", run, tmp_path / "w.safetensors").values())


def test_full_disk_in_torch_checkpoint_writes_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from torch_ref import checkpoint as ckpt

    ckpt.write_checkpoint(tmp_path, 3, {"step": 3, "w": torch.ones(2)}, is_best=True, keep=2)
    failing_torch_save(monkeypatch, at_step=6)
    with pytest.raises(MrsynthError, match=r"step_00000006.pt: no space left on device \(\d+ MiB free\)"):
        ckpt.write_checkpoint(tmp_path, 6, {"step": 6, "w": torch.zeros(2)}, is_best=True, keep=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "step_00000003.pt"]
    assert ckpt.read_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 3


def test_full_disk_in_orbax_saves_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from jax_impl.checkpoint import CheckpointStore

    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    state = {"w": jnp.arange(3.0)}
    store.save(1, state, {"loader": {}}, is_best=False)
    real_save = ocp.CheckpointManager.save

    def save(self, step, **kwargs):
        if step == 2:
            raise RuntimeError("save failed") from ENOSPC  # orbax wraps what its writers raise
        return real_save(self, step, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    try:
        with pytest.raises(MrsynthError, match=r"last/2: no space left on device \(\d+ MiB free\)"):
            store.save(2, state, {"loader": {}}, is_best=False)
        store.wait()
        step, restored, _ = store.restore_latest(jax_abstract(state))
    finally:
        store.close()
    assert step == 1
    np.testing.assert_array_equal(np.asarray(restored["w"]), [0.0, 1.0, 2.0])


def jax_abstract(tree):
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def test_disk_full_error_finds_wrapped_errors_and_ignores_others(tmp_path):
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("writer failed") from inner
    except RuntimeError as exc:
        error = disk_full_error(tmp_path / "missing" / "file.json", exc)
    assert isinstance(error, MrsynthError)
    assert str(error).startswith(f"{tmp_path / 'missing' / 'file.json'}: disk quota exceeded (")
    assert disk_full_error(tmp_path, OSError(errno.EACCES, "denied")) is None


class FullFile:
    """A file on a full disk: every write fails with ENOSPC."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def test_metrics_write_on_a_full_disk_names_the_file(tmp_path):
    runs.write_run_start(tmp_path, load_config(None), "jax")  # the config and run.json a run starts with
    logger = loop.RunLogger(tmp_path, 10, 0)
    logger._file.close()
    logger._file = FullFile()
    with pytest.raises(MrsynthError, match="metrics.jsonl: no space left on device"):
        logger.log("train", 1, {"loss": 1.0})
    logger.close()


def test_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    cfg = load_config(None, tiny_overrides(tmp_path))
    run = tmp_path / "run"
    runs.lock_run_dir(run)
    runs.write_run_start(run, cfg, "torch")
    runs.unlock_run_dir(run)
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # info lines (phantom generation) may come first
    assert [line for line in err if line.startswith("error:")] == err[-1:] == [
        f"error: {run}: no checkpoint to resume from; start a new run instead"]
    assert run_info(run)["status"] == "running"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_folder_lock_refuses_live_holders_and_takes_over_stale_ones(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lock = run / runs.LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    assert main(["train", "--backend", "torch", "--run-dir", str(run)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {run}: in use by another training (pid {os.getppid()} on {socket.gethostname()}); "
        f"if that process is gone, delete {lock}")
    lock.write_text(json.dumps({"pid": os.getppid(), "host": "elsewhere"}))
    with pytest.raises(MrsynthError, match="in use by another training"):
        runs.lock_run_dir(run)

    lock.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    runs.lock_run_dir(run)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    runs.unlock_run_dir(run)
    assert not lock.exists()


def test_default_run_names_started_in_the_same_second_differ(tmp_path, monkeypatch):
    cfg = load_config(None, [f"run.root={tmp_path}"])
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")
    first = runs.new_run_dir(cfg, "jax")
    second = runs.new_run_dir(cfg, "jax")
    assert (first.name, second.name) == ("demo-jax-20260101-000000", "demo-jax-20260101-000000-2")
