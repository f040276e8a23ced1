"""What a user sees: the real CLI in a subprocess, as a fresh clone's first command runs it.

pytest captures logging inside its own process, so only a child process shows what a library's
root-logger handler (orbax installs one on import) does to mrsynth's messages.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Model, patch and optimizer settings (steps included: the schedule is part of the compiled step)
# of tests/test_cross_validation.py's runs: the JAX child reuses the train step compiled there.
TINY = ["data.root=phantom", "data.cache_dir=cache", "data.phantom_subjects=4", "data.phantom_shape=[48,56,40]",
        "data.patch_size=[48,56]", "data.split_fractions=[0.5,0.25,0.25]", "model.depth=2", "model.base_channels=8",
        "model.channel_mults=[1,2,4]", "model.groups=2", "train.steps=20", "train.batch_size=4",
        "train.warmup_steps=1", "train.log_every=2", "train.val_every=20", "train.ckpt_every=20", "run.root=runs"]
STEPS = 20


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_first_command_prints_each_message_once_and_no_debug_lines(backend, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--backend", backend, "--no-progress",
                           *[a for s in TINY for a in ("--set", s)]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert not [line for line in lines if "DEBUG" in line or ":mrsynth" in line or "step 2: loss" in line], lines
    messages = [line for line in lines if not line.startswith(" ")]
    assert len(messages) == len(set(messages)), [m for m in messages if messages.count(m) > 1]
    out = done.stdout.strip().splitlines()
    assert out[0].startswith("finished: ") and f"({backend}, {STEPS} steps)" in out[0] and "psnr" in out[0], out
    assert out[1].startswith(f"best checkpoint (evaluate, predict and model.safetensors use it): step {STEPS}, "
                             "validation mae "), out
    assert out[2:] == ["next:", f"  mrsynth evaluate --checkpoint {out[0].split()[1]}",
                       f"  mrsynth predict --checkpoint {out[0].split()[1]} --input T1.nii.gz --out synth/"]


@pytest.mark.slow
def test_training_with_grain_workers_leaves_no_shared_memory_behind(tmp_path):
    """grain's workers hand batches over in shared memory; before the loader copied them out, the
    last few were freed only as the interpreter exited, and the resource tracker reported them
    (`There appear to be 4 leaked shared_memory objects`) in 2 of 3 runs."""
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--backend", "jax", "--no-progress",
                           *[a for s in [*TINY, "data.workers=2"] for a in ("--set", s)]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr[-3000:]
