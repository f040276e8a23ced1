"""JAX data-parallel scaling over 1..N devices, run in a subprocess.

The device count of the CPU platform is fixed when JAX starts, so the scaling run gets its own
interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N = the largest
count asked for). Forced host devices share the same CPU cores, so on a CPU this checks the
mechanism (sharded vs pmap, collectives) rather than real speed-up; on a multi-GPU machine the
flag is ignored and the real devices are used.
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


def _child_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(FORCE_FLAG)]
    env["XLA_FLAGS"] = " ".join([*flags, f"{FORCE_FLAG}={devices}"])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_scaling(config: dict[str, Any], devices: list[int], modes: list[str],
                batch_per_device: int, steps: int, warmup: int, timeout_s: float = 1800) -> dict[str, Any]:
    """Run ``python -m jax_impl.bench`` once for every (mode, device count); its JSON result."""
    spec = {"config": config, "devices": sorted(set(devices)), "modes": modes,
            "batch_per_device": batch_per_device, "steps": steps, "warmup": warmup}
    with tempfile.TemporaryDirectory(prefix="mrsynth-bench-scaling-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "jax_impl.bench", str(spec_path), str(out_path)],
                              env=_child_env(max(devices)), capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MrsynthError(f"JAX scaling subprocess failed (exit {proc.returncode}): {tail[0]}")
        return json.loads(out_path.read_text())
