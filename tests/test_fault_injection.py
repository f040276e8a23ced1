"""SIGKILL at chosen moments: a resumed run ends bit-identical to an uninterrupted one, and a
killed predict leaves only whole outputs once rerun.

Subprocesses of ``run.py`` on a tiny phantom, killed with the machinery of
``benchmarks/fault_injection.py`` (which does the same at many random moments). What is not
killed (the uninterrupted reference run, the exports compared, a finishing rerun) runs through
the CLI's ``main`` in-process.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrsynth.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fault_injection as fi  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


def finish(argv: list[str]) -> None:
    """A command that is not killed, to completion, in-process."""
    assert main(argv) == 0, argv[:3]


def final_weights(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """:func:`fault_injection.final_weights` in-process: the run's portable file and an export of
    its last checkpoint."""
    last = run_dir.parent / f"{run_dir.name}_last.safetensors"
    finish(["export", "--checkpoint", str(run_dir), "--which", "last", "--out", str(last)])
    return {"model.safetensors": fi.tensors(run_dir / "model.safetensors"), "last": fi.tensors(last)}


def kill_in_a_later_checkpoint_write(backend: str, work: Path, attempts: int = 3) -> Path:
    """A run SIGKILLed while writing a checkpoint, after its first checkpoint is durable (killed
    before that, nothing is left to resume: a new run is the recovery).

    On a loaded machine JAX's asynchronous first save can still be finishing when step
    2 * CKPT_EVERY is logged, so the step alone does not say it. A write can also finish between
    the watcher's look and the kill, or a starved watcher can miss every later write of a run that
    then ends (seen with PyTorch beside a training); neither attempt is a kill mid-write, so a new
    run tries again, and a run that never writes a later checkpoint fails every attempt.
    """
    for attempt in range(attempts):
        run_dir = work / f"{backend}_killed{attempt}"

        def later_write(now: str | None) -> bool:
            return (now == "checkpoint write" and fi.last_step(run_dir) >= 2 * fi.CKPT_EVERY
                    and fi.CKPT_EVERY in fi.durable_steps(run_dir))

        proc = fi.start(fi.train_argv(backend, run_dir, work), work)
        if fi.kill_when(proc, run_dir, later_write) == "checkpoint write":
            assert fi.temporaries(run_dir / "checkpoints")
            return run_dir
    raise AssertionError(f"{attempts} runs in a row were not killed in a checkpoint write; the last: "
                         f"{fi.stderr_tail(proc)}")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_killed_in_checkpoint_write_and_step_resumes_exactly(work, backend):
    reference_dir = work / f"{backend}_reference"
    finish(fi.train_argv(backend, reference_dir, work))
    reference = final_weights(reference_dir)

    run_dir = kill_in_a_later_checkpoint_write(backend, work)
    metrics_before = (run_dir / "metrics.jsonl").stat().st_ino
    proc = fi.start(["train", "--resume", str(run_dir)], work)

    def stepping_again(now: str | None) -> bool:
        """The resumed process is training: it rewrote metrics.jsonl (dropping the rows after the
        checkpoint it resumed from) and has logged past the first checkpoint."""
        rewritten = (run_dir / "metrics.jsonl").stat().st_ino != metrics_before
        return now is not None and rewritten and fi.last_step(run_dir) > fi.CKPT_EVERY

    # The second kill lands wherever the resumed process is then (a step, a checkpoint write or a
    # validation, as timing has it): what matters is that it is killed mid-run once more.
    assert fi.kill_when(proc, run_dir, stepping_again) in fi.MOMENTS, fi.stderr_tail(proc)
    finish(["train", "--resume", str(run_dir)])

    got = final_weights(run_dir)
    for name in reference:
        assert fi.identical(got[name], reference[name]), name
    assert not fi.temporaries(run_dir / "checkpoints")


def test_killed_predict_leaves_only_whole_outputs_after_rerun(work):
    run_dir = work / "torch_predict_run"
    finish(fi.train_argv("torch", run_dir, work))
    inputs = work / "t1s"
    inputs.mkdir()
    for t1 in sorted((work / "phantom").glob("IXI*-T1.nii.gz")):
        (inputs / t1.name).write_bytes(t1.read_bytes())
    out = work / "predicted"
    argv = ["predict", "--checkpoint", str(run_dir), "--input", str(inputs), "--out", str(out), "--mask", "nonzero"]

    proc = fi.start(argv, work)
    while proc.poll() is None and not fi.temporaries(out):
        pass
    assert proc.poll() is None, "predict finished before an output write was caught"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = fi.temporaries(out)
    for path in out.glob("*.nii.gz"):  # whatever is in place under its final name is whole
        if path not in leftovers:
            nib.load(str(path)).get_fdata()

    finish([*argv, "--skip-existing"])
    names = sorted(p.name for p in out.iterdir())
    assert not fi.temporaries(out), names
    assert len([n for n in names if n.endswith("_synthT2.nii.gz")]) == 4
    assert len([n for n in names if n.endswith("_synthT2.json")]) == 4
    for path in out.glob("*.nii.gz"):
        nib.load(str(path)).get_fdata()
