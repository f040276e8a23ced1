"""The JAX half of ``run.py benchmark``: timing sessions over :class:`jax_impl.train.JaxEngine`.

The engine builds the model, optimizer and jitted step exactly as training does, and runs its
steps and its predictor at the variant's precision (``train.precision``); this module adds
what timing needs: one batch placed on the device(s) once, ``block_until_ready`` after every
timed step, device memory figures, and the multi-device scaling run (``python -m
jax_impl.bench SPEC.json OUT.json``, started by :mod:`mrsynth.bench.scaling` with forced host
devices on a CPU).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mrsynth.config import Config, config_from_dict

from mrsynth.bench.backends import scaling_times, time_matmul_tflops
from mrsynth.bench.session import EngineSession, synthetic_batch
from mrsynth.bench.settings import BenchSettings
from mrsynth.precision import get_precision
from jax_impl import XLA_FLAGS_ADDED
from jax_impl.precision import matmul_precision, precision_scope
from jax_impl.train import JaxEngine


class JaxSession(EngineSession):
    """A timing session on ``devices`` (default: the first device)."""

    def __init__(self, cfg: Config, batch: dict[str, np.ndarray],
                 devices: list[jax.Device] | None = None) -> None:
        self.devices = devices or jax.local_devices()[:1]
        super().__init__(lambda run_dir: JaxEngine(cfg, run_dir, devices=self.devices), batch, "jax")
        self.settings = {
            "device": self.devices[0].device_kind,
            "devices": len(self.devices),
            "platform": self.devices[0].platform,
            "precision": cfg.train.precision,
            "matmul_precision": matmul_precision(cfg.train.precision),
            "compute_dtype": get_precision(cfg.train.precision).activations,
            "parallel": cfg.train.parallel,
        }

    def wait(self, result: Any) -> None:
        jax.block_until_ready((result, self.engine.state))

    def memory(self) -> dict[str, float | None]:
        """Peak bytes in use on the busiest device (a process high-water mark in JAX: it cannot be
        reset, so it covers every earlier session of this process too)."""
        stats = [d.memory_stats() or {} for d in self.devices]
        peak = [s["peak_bytes_in_use"] for s in stats if "peak_bytes_in_use" in s]
        in_use = [s["bytes_in_use"] for s in stats if "bytes_in_use" in s]
        return {"device_peak_mib": max(peak) / 2**20 if peak else None,
                "device_in_use_mib": max(in_use) / 2**20 if in_use else None}


class JaxBench:
    """:class:`mrsynth.bench.backends.BackendBench` for JAX."""

    name = "jax"

    def configure(self, settings: BenchSettings) -> None:
        """Nothing process-wide to set: XLA sizes its CPU thread pool itself."""

    def device_info(self) -> dict[str, Any]:
        device = jax.local_devices()[0]
        info: dict[str, Any] = {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "device_count": jax.device_count(),
            "jax": jax.__version__,
            **xla_flags(),
        }
        try:
            from jax.extend import backend

            info["platform_version"] = backend.get_backend().platform_version  # CUDA / cuDNN build
        except (ImportError, AttributeError, RuntimeError):
            info["platform_version"] = None
        return info

    def matmul_tflops(self, precision: str, size: int) -> float:
        size = size or (8192 if jax.default_backend() == "gpu" else 1024)
        dtype = jnp.dtype(get_precision(precision).activations)
        keys = jax.random.split(jax.random.PRNGKey(0))
        a, b = (jax.random.normal(k, (size, size), dtype) for k in keys)
        matmul = jax.jit(jnp.matmul)
        with precision_scope(precision):
            return time_matmul_tflops(lambda: jax.block_until_ready(matmul(a, b)), size)

    def open_session(self, cfg: Config, batch: dict[str, np.ndarray]) -> JaxSession:
        return JaxSession(cfg, batch)


def xla_flags() -> dict[str, Any]:
    """The XLA_FLAGS this process runs with, and which of them mrsynth added (multi-GPU overlap)."""
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "xla_flags_added": list(XLA_FLAGS_ADDED)}


def create_bench() -> JaxBench:
    return JaxBench()


def run_scaling(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Weak scaling: ``batch_per_device`` samples per device on 1..N devices, per parallel mode.

    Device counts above what this process sees are skipped (reported as such).
    """
    rows = []
    available = jax.devices()
    for mode in spec["modes"]:
        for n in spec["devices"]:
            row: dict[str, Any] = {"mode": mode, "devices": n, "batch": spec["batch_per_device"] * n}
            if n > len(available):
                rows.append({**row, "skipped": f"only {len(available)} devices"})
                continue
            raw = json.loads(json.dumps(spec["config"]))
            raw["train"].update(batch_size=row["batch"], parallel=mode)
            cfg = config_from_dict(raw)
            batch = synthetic_batch(row["batch"], list(cfg.data.patch_size), cfg.model.in_channels)
            session = JaxSession(cfg, batch, devices=available[:n])
            try:
                row.update(scaling_times(session, spec["warmup"], spec["steps"]))
            finally:
                session.close()
            rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    """``python -m jax_impl.bench SPEC.json OUT.json``: the scaling run of mrsynth.bench.scaling."""
    spec_path, out_path = (Path(a) for a in argv)
    spec = json.loads(spec_path.read_text())
    result = {"device_count": jax.device_count(), "device_kind": jax.devices()[0].device_kind, **xla_flags(),
              "rows": run_scaling(spec)}
    out_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
