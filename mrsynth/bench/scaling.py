"""Data-parallel weak scaling over 1..N devices, each count measured in a subprocess.

JAX: one interpreter for every count and mode (``python -m jax_impl.bench``), with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N = the largest count asked for): the
device count of the CPU platform is fixed when JAX starts; on a multi-GPU machine the flag is
ignored and the real devices are used. Torch: one ``torchrun --nproc_per_node=N`` per count
(``python -m torch_ref.bench``), DDP over gloo (CPU) or NCCL (one GPU per process).

Forced host devices and CPU processes share the same cores, so on a CPU this checks the
mechanism (sharded vs pmap vs DDP, collectives) rather than real speed-up.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mrsynth.errors import MrsynthError

FORCE_FLAG = "--xla_force_host_platform_device_count"
REPO_ROOT = Path(__file__).resolve().parents[2]
TORCH_MODE = "ddp"


def _child_env(jax_devices: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if jax_devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(FORCE_FLAG)]
        env["XLA_FLAGS"] = " ".join([*flags, f"{FORCE_FLAG}={jax_devices}"])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def _run_child(launcher: list[str], module: str, spec: dict[str, Any], env: dict[str, str],
               timeout_s: float) -> dict[str, Any]:
    """``launcher -m module SPEC.json OUT.json`` in a temporary folder; the JSON it wrote."""
    with tempfile.TemporaryDirectory(prefix="mrsynth-bench-scaling-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([*launcher, "-m", module, str(spec_path), str(out_path)], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MrsynthError(f"{module} scaling subprocess failed (exit {proc.returncode}): {tail[0]}")
        return json.loads(out_path.read_text())


def run_jax_scaling(spec: dict[str, Any], timeout_s: float = 1800) -> dict[str, Any]:
    """Every (mode, device count) of ``spec`` in one JAX subprocess; its JSON result."""
    return _run_child([sys.executable], "jax_impl.bench", spec, _child_env(max(spec["devices"])), timeout_s)


def run_torch_scaling(spec: dict[str, Any], available: int | None, timeout_s: float = 1800) -> dict[str, Any]:
    """One ``torchrun`` per device count (counts above ``available`` GPUs are skipped); the rows."""
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for n in spec["devices"]:
        if available is not None and n > available:
            rows.append({"mode": TORCH_MODE, "devices": n, "batch": spec["batch_per_device"] * n,
                         "skipped": f"only {available} devices"})
            continue
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        result = _run_child(launcher, "torch_ref.bench", spec, _child_env(), timeout_s)
        rows += result.pop("rows")
    return {**result, "rows": rows}
