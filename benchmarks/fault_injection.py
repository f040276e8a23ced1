"""Kill training with SIGKILL at random moments, resume, and check the result is exact.

Each trial trains a tiny phantom run in a subprocess, SIGKILLs it once at a random moment
(seeded), resumes it to completion with ``train --resume``, and compares the final portable
weights (``model.safetensors`` and an export of the last checkpoint) with an uninterrupted
run's, tensor by tensor and bit for bit. The moment hit is read from the run folder just
before the kill: a temporary in ``checkpoints/`` (a checkpoint write), a temporary in the run
folder (the final export), a logged training step at a validation step (validation), else a
training step. Prints a Markdown table per backend.

    python benchmarks/fault_injection.py [--kills 50] [--seed 0] [--backends jax torch]

``tests/test_fault_injection.py`` uses the same machinery at chosen moments.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrsynth.fileio import is_temporary_name  # noqa: E402

MOMENTS = ("step", "checkpoint write", "validation", "export")
STEPS, VAL_EVERY, CKPT_EVERY = 10, 3, 2  # a resumed run has 8 steps left: time for a watcher on a loaded machine to see it
TINY_SETTINGS = [
    "data.phantom_subjects=4", "data.phantom_shape=[32,32,24]", "data.patch_size=[32,32]",
    "data.split_fractions=[0.5,0.25,0.25]",
    "model.depth=2", "model.base_channels=4", "model.channel_mults=[1,2,4]", "model.groups=2",
    "model.dropout=0.1", f"train.steps={STEPS}", "train.batch_size=4", "train.warmup_steps=1",
    "train.log_every=1", f"train.val_every={VAL_EVERY}", f"train.ckpt_every={CKPT_EVERY}",
    "train.val_subjects_max=1", "train.deterministic=true",
]


def child_env(work: Path) -> dict[str, str]:
    """One thread per child, and a shared JAX compilation cache: a resume need not recompile (the
    caller's cache when it has one, e.g. the test session's, else one in ``work``)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(work / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def train_argv(backend: str, run_dir: Path, work: Path) -> list[str]:
    overrides = [f"data.root={work / 'phantom'}", f"data.cache_dir={work / 'cache'}", *TINY_SETTINGS]
    return ["train", "--backend", backend, "--run-dir", str(run_dir), *[a for o in overrides for a in ("--set", o)]]


def start(argv: list[str], work: Path) -> subprocess.Popen:
    """``python run.py ARGV`` in its own process group (so a kill takes its helpers too)."""
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *argv], env=child_env(work), cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def stderr_tail(proc: subprocess.Popen) -> str:
    """What an ended process printed last (for a failure message)."""
    return proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "(still running)"


def finish(argv: list[str], work: Path) -> None:
    """Run a command to completion; raise with its stderr when it fails."""
    proc = start(argv, work)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"run.py {' '.join(argv[:3])} failed ({proc.returncode}): {err.decode()[-2000:]}")


def temporaries(folder: Path) -> list[Path]:
    """Half-written files and folders under ``folder``: ours (fileio) and orbax's."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if is_temporary_name(p.name) or ".orbax-checkpoint-tmp" in p.name]


def moment(run_dir: Path) -> str | None:
    """What a run is doing now, read from its folder; None before its first logged step."""
    try:
        names = [e.name for e in os.scandir(run_dir)]
        ckpt = run_dir / "checkpoints"
        if ckpt.is_dir() and temporaries(ckpt):
            return "checkpoint write"
        if any(is_temporary_name(n) and n.startswith(".model.") for n in names):
            return "export"
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    records = [json.loads(line) for line in lines if line.endswith("}")]
    if not records:
        return None
    last = records[-1]
    if last["kind"] == "train" and (last["step"] % VAL_EVERY == 0 or last["step"] == STEPS):
        return "validation"
    return "step"


def last_step(run_dir: Path) -> int:
    """The last training step logged (0 before the first)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}") and '"train"' in line]
    return max(steps, default=0)


def durable_steps(run_dir: Path) -> set[int]:
    """The steps with a finished checkpoint: PyTorch's ``step_*.pt`` files, orbax's step folders
    under ``last`` (an asynchronous orbax save can still be finishing while training goes on)."""
    ckpt = run_dir / "checkpoints"
    names = [p.name for p in ckpt.glob("step_*.pt")] + [p.name for p in (ckpt / "last").glob("*")]
    return {int(n.removeprefix("step_").removesuffix(".pt")) for n in names
            if n.removeprefix("step_").removesuffix(".pt").isdigit()}


def kill_when(proc: subprocess.Popen, run_dir: Path, wanted: Callable[[str | None], bool],
              delay_s: float = 0.0) -> str | None:
    """SIGKILL the process group once ``wanted(moment)`` (after ``delay_s``); the moment hit, or
    None when the process ended first."""
    deadline = None
    while proc.poll() is None:
        now = moment(run_dir)
        if wanted(now):
            deadline = deadline or time.monotonic() + delay_s
            if time.monotonic() >= deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return moment(run_dir)  # read after the kill: what the run was really doing
        time.sleep(0.0005)
    return None


def tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def final_weights(run_dir: Path, work: Path) -> dict[str, dict[str, np.ndarray]]:
    """The run's portable file and an export of its last checkpoint."""
    last = run_dir.parent / f"{run_dir.name}_last.safetensors"
    finish(["export", "--checkpoint", str(run_dir), "--which", "last", "--out", str(last)], work)
    return {"model.safetensors": tensors(run_dir / "model.safetensors"), "last": tensors(last)}


@dataclass
class Tally:
    kills: int = 0
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MOMENTS, 0))
    failed_resumes: int = 0
    corrupted: int = 0
    before_first_checkpoint: int = 0  # resume refused (no durable checkpoint yet): a new run recovers
    identical: bool = True


def trial(backend: str, work: Path, reference: dict[str, dict[str, np.ndarray]], rng: random.Random,
          index: int, tally: Tally) -> None:
    """One kill at a random moment, then resume to completion and compare."""
    run_dir = work / f"{backend}_{index}"
    target = rng.choice(MOMENTS)
    proc = start(train_argv(backend, run_dir, work), work)
    hit = kill_when(proc, run_dir, lambda m: m == target or (target == "step" and m is not None),
                    delay_s=rng.uniform(0, 0.3) if target == "step" else 0.0)
    if hit is None:  # finished before the moment came: count nothing, the run is whole
        return
    tally.kills += 1
    tally.hits[hit] = tally.hits.get(hit, 0) + 1
    try:
        if last_step(run_dir) < CKPT_EVERY or (hit == "checkpoint write" and last_step(run_dir) == CKPT_EVERY):
            shutil.rmtree(run_dir)  # killed before its first checkpoint: the recovery is a new run
            finish(train_argv(backend, run_dir, work), work)
        else:
            finish(["train", "--resume", str(run_dir)], work)
    except RuntimeError as exc:
        if "no checkpoint to resume from" in str(exc):  # killed before the first save was durable
            tally.before_first_checkpoint += 1
            shutil.rmtree(run_dir)
            finish(train_argv(backend, run_dir, work), work)
            got = final_weights(run_dir, work)
            tally.identical &= all(identical(got[k], reference[k]) for k in reference)
            return
        tally.failed_resumes += 1
        if "checkpoint" in str(exc).lower():
            tally.corrupted += 1
        print(f"  {backend} kill {index} ({hit}): {str(exc).splitlines()[0]}", file=sys.stderr)
        tally.identical = False
        return
    got = final_weights(run_dir, work)
    tally.identical &= all(identical(got[k], reference[k]) for k in reference)


def run(backends: list[str], kills: int, seed: int, work: Path) -> dict[str, Tally]:
    rng = random.Random(seed)
    tallies = {}
    for b, backend in enumerate(backends):
        reference_dir = work / f"{backend}_reference"
        finish(train_argv(backend, reference_dir, work), work)
        reference = final_weights(reference_dir, work)
        tally = tallies[backend] = Tally()
        share = kills // len(backends) + (1 if b < kills % len(backends) else 0)
        for index in range(share):
            trial(backend, work, reference, rng, index, tally)
    return tallies


def table(tallies: dict[str, Tally]) -> str:
    rows = ["| backend | kills | moments hit | no checkpoint yet (new run) | failed resumes | corrupted checkpoints "
            "| final weights identical |",
            "|---|---|---|---|---|---|---|"]
    for backend, t in tallies.items():
        hits = ", ".join(f"{m} {t.hits[m]}" for m in MOMENTS)
        rows.append(f"| {backend} | {t.kills} | {hits} | {t.before_first_checkpoint} | {t.failed_resumes} | {t.corrupted} | "
                    f"{'yes' if t.identical else 'no'} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kills in all, split over the backends")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"], choices=("jax", "torch"))
    args = parser.parse_args()
    start_time = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mrsynth-faults-") as tmp:
        tallies = run(args.backends, args.kills, args.seed, Path(tmp))
    print(table(tallies))
    print(f"\n{args.kills} kills requested, seed {args.seed}, {time.perf_counter() - start_time:.0f} s")


if __name__ == "__main__":
    main()
