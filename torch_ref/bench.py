"""The PyTorch half of ``run.py benchmark``: timing sessions over :class:`torch_ref.train.TorchEngine`,
and one DDP scaling row per ``torchrun`` (``python -m torch_ref.bench SPEC.json OUT.json``).

The engine builds the model, AdamW and step exactly as training does (the variant's precision:
TF32 switches and bf16 autocast; ``torch.compile`` and channels_last from the config, cuDNN
autotuning on CUDA); this module adds one batch converted onto the device once,
``torch.cuda.synchronize`` after every timed step and the CUDA memory figures.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrsynth.config import Config, config_from_dict

from mrsynth.bench.backends import scaling_times, time_matmul_tflops
from mrsynth.bench.session import EngineSession, synthetic_batch
from mrsynth.bench.settings import BenchSettings
from mrsynth.precision import get_precision
from torch_ref.backend import default_device
from torch_ref.distributed import setup_distributed, teardown_distributed
from torch_ref.precision import precision_scope
from torch_ref.train import TorchEngine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchSession(EngineSession):
    """A timing session on this process's device."""

    def __init__(self, cfg: Config, batch: dict[str, np.ndarray]) -> None:
        super().__init__(lambda run_dir: TorchEngine(cfg, run_dir), batch, "torch")
        self.settings = {
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "devices": 1,
            "platform": self.device.type,
            "precision": cfg.train.precision,
            "allow_tf32": get_precision(cfg.train.precision).tf32,
            "compute_dtype": get_precision(cfg.train.precision).activations,
            "torch_compile": cfg.train.torch_compile,
            "torch_compile_mode": cfg.train.torch_compile_mode if cfg.train.torch_compile else None,
            "torch_compile_optimizer": cfg.train.torch_compile_optimizer,
            "fused_adamw": any(o.defaults.get("fused") for o in self.engine.optimizers.values()),
            "channels_last": self.engine.channels_last,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "threads": torch.get_num_threads(),
        }

    def on_open(self) -> None:
        self.device = self.engine.device
        if self.device.type == "cuda":  # the peak of this session alone
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def wait(self, result: Any) -> None:
        _sync(self.device)

    def memory(self) -> dict[str, float | None]:
        """CUDA allocator peak since this session opened; None on a CPU (see the host RSS)."""
        if self.device.type != "cuda":
            return {"device_peak_mib": None, "device_in_use_mib": None}
        return {"device_peak_mib": torch.cuda.max_memory_allocated(self.device) / 2**20,
                "device_in_use_mib": torch.cuda.memory_allocated(self.device) / 2**20}

    def release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class TorchBench:
    """:class:`mrsynth.bench.backends.BackendBench` for PyTorch."""

    name = "torch"

    def configure(self, settings: BenchSettings) -> None:
        if settings.torch_cpu_threads > 0 and default_device().type == "cpu":
            torch.set_num_threads(settings.torch_cpu_threads)

    def device_info(self) -> dict[str, Any]:
        device = default_device()
        info: dict[str, Any] = {
            "platform": device.type,
            "device_kind": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "device_count": torch.cuda.device_count() if device.type == "cuda" else 1,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "threads": torch.get_num_threads(),
        }
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            info["memory_gib"] = props.total_memory / 2**30
            info["compute_capability"] = f"{props.major}.{props.minor}"
        return info

    def matmul_tflops(self, precision: str, size: int) -> float:
        device = default_device()
        size = size or (8192 if device.type == "cuda" else 1024)
        dtype = getattr(torch, get_precision(precision).activations)
        generator = torch.Generator(device="cpu").manual_seed(0)
        a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))

        def synced_matmul() -> None:
            torch.matmul(a, b)
            _sync(device)

        with precision_scope(precision), torch.inference_mode():
            return time_matmul_tflops(synced_matmul, size)

    def open_session(self, cfg: Config, batch: dict[str, np.ndarray]) -> TorchSession:
        return TorchSession(cfg, batch)


def create_bench() -> TorchBench:
    return TorchBench()


def run_scaling(spec: dict[str, Any]) -> dict[str, Any]:
    """This process's part of one DDP weak-scaling row (``batch_per_device`` samples per process):
    every rank steps (DDP all-reduces the gradients in buckets during the backward pass); rank 0's
    times are the row."""
    raw = json.loads(json.dumps(spec["config"]))
    ctx = setup_distributed()
    raw["train"].update(batch_size=spec["batch_per_device"] * ctx.world_size)
    cfg = config_from_dict(raw)
    if spec.get("torch_cpu_threads", 0) > 0 and ctx.device.type == "cpu":
        torch.set_num_threads(spec["torch_cpu_threads"])
    batch = synthetic_batch(spec["batch_per_device"], list(cfg.data.patch_size), cfg.model.in_channels)
    session = TorchSession(cfg, batch)
    try:
        times = scaling_times(session, spec["warmup"], spec["steps"])
    finally:
        session.close()
        teardown_distributed(ctx)
    return {"mode": "ddp", "devices": ctx.world_size, "batch": spec["batch_per_device"] * ctx.world_size,
            "process": ctx.rank, **times}


def main(argv: list[str]) -> int:
    """``torchrun --nproc_per_node=N -m torch_ref.bench SPEC.json OUT.json``: one scaling row of
    mrsynth.bench.scaling; rank 0 writes it."""
    spec_path, out_path = (Path(a) for a in argv)
    row = run_scaling(json.loads(spec_path.read_text()))
    if row.pop("process") == 0:
        out_path.write_text(json.dumps({**TorchBench().device_info(), "rows": [row]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
