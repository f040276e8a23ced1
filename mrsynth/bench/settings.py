"""Benchmark settings: the ``benchmark:`` section of a bench YAML plus the usual run config.

A bench config (``configs/bench_cpu.yaml``, ``configs/bench_gpu.yaml``) is a normal mrsynth
config (data / model / train / eval) with one more section::

    benchmark:
      backends: [jax, torch]
      dims: [2, 3]
      variants: [float32, bfloat16]
      cases:                      # per dims: batch sizes, sample size, model overrides
        2d: {batch: [32], size: [256, 256], model: {depth: 4, base_channels: 64, ...}}
        3d: {batch: [16], size: [32, 128, 128], model: {...}}

``--set`` overrides reach both parts (``--set benchmark.steps=50``, ``--set data.workers=4``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from mrsynth.config import (Config, apply_overrides, build_dataclass, config_from_dict, merge_mappings,
                            read_yaml_mapping)
from mrsynth.errors import ConfigError

from mrsynth.bench.variants import Variant, parse_variant

SECTION = "benchmark"


@dataclass
class CaseSettings:
    """One dims' shapes: a sweep over batch sizes at one sample size, and the model it uses."""

    batch: list[int]
    size: list[int]
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchSettings:
    backends: list[str] = field(default_factory=lambda: ["jax", "torch"])
    dims: list[int] = field(default_factory=lambda: [2, 3])
    variants: list[str] = field(default_factory=lambda: ["float32"])
    steps: int = 20  # timed steps per (backend, variant, case), split over `rounds`
    warmup: int = 3  # untimed steps after the first (compiling) one
    rounds: int = 2  # the timed steps alternate jax / torch this many times
    pipeline: bool = True  # also feed the step from the real grain loader
    pipeline_steps: int = 10
    inference: bool = True  # whole-volume synthesis through mrsynth.inference.volume
    inference_subjects: int = 1
    scaling: bool = True  # 1..N devices in subprocesses (JAX: forced host devices on a CPU; torch: DDP processes)
    scaling_backends: list[str] = field(default_factory=lambda: ["jax", "torch"])  # of those in `backends`
    scaling_dims: list[int] = field(default_factory=lambda: [2, 3])  # which cases get a scaling run
    scaling_devices: list[int] = field(default_factory=lambda: [1, 2, 4])
    scaling_modes: list[str] = field(default_factory=lambda: ["sharded", "pmap"])  # JAX's; torch runs DDP
    scaling_steps: int = 10
    peak_tflops: float | None = None  # the device's peak; None: measured with a large matmul
    # torch intra-op threads on a CPU (0: torch's default, one per core). On a shared, oversubscribed
    # CPU, OpenMP's barriers wait for descheduled threads: measured here 2.7 s/step with 2 threads
    # vs 38 ms with 1 for the CPU config's 2D model, so configs/bench_cpu.yaml pins 1.
    torch_cpu_threads: int = 0
    matmul_size: int = 0  # side of the peak-measuring matmul; 0: backend default (GPU 8192, CPU 1024)
    cases: dict[str, CaseSettings] = field(default_factory=dict)

    def parsed_variants(self) -> list[Variant]:
        return [parse_variant(v) for v in self.variants]


def _parse_settings(raw: dict[str, Any]) -> BenchSettings:
    raw = dict(raw)
    cases_raw = raw.pop("cases", {}) or {}
    settings = build_dataclass(BenchSettings, raw, f"{SECTION}.")
    if not isinstance(cases_raw, dict):
        raise ConfigError(f"{SECTION}.cases: expected a mapping like {{2d: ..., 3d: ...}}")
    for key, case in cases_raw.items():
        if key not in ("2d", "3d") or not isinstance(case, dict):
            raise ConfigError(f"{SECTION}.cases.{key}: expected '2d' or '3d' with batch/size/model")
        case = dict(case)
        model = case.pop("model", {}) or {}
        if not isinstance(model, dict):
            raise ConfigError(f"{SECTION}.cases.{key}.model: expected a mapping of model keys")
        unknown = sorted(set(case) - {"batch", "size"})
        if unknown:
            raise ConfigError(f"unknown config key '{SECTION}.cases.{key}.{unknown[0]}' (known: batch, model, size)")
        settings.cases[key] = CaseSettings(
            batch=[int(b) for b in _as_list(case.get("batch"), f"{SECTION}.cases.{key}.batch")],
            size=[int(s) for s in _as_list(case.get("size"), f"{SECTION}.cases.{key}.size")],
            model=model,
        )
    return settings


def _as_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise ConfigError(f"{key}: expected an integer or a list of integers, got {value!r}")


def load_bench_config(path: str | Path, overrides: list[str] | None = None) -> tuple[BenchSettings, dict[str, Any]]:
    """(settings, the raw run-config mapping without the benchmark section)."""
    raw = apply_overrides(read_yaml_mapping(path), overrides)
    bench_raw = raw.pop(SECTION, {}) or {}
    try:
        settings = _parse_settings(bench_raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings, raw


def case_config(raw: dict[str, Any], dims: int, case: CaseSettings, batch: int, variant: Variant) -> Config:
    """The run config of one measurement: base config + the case's model/size/batch + the variant."""
    key = f"{dims}d"
    if len(case.size) != dims:
        raise ConfigError(f"{SECTION}.cases.{key}.size: {dims}D needs {dims} numbers, got {case.size}")
    update = {
        "model": {**case.model, **variant.model_overrides(), "dims": dims},
        "data": {"patch_size": list(case.size)},
        "train": {**variant.train_overrides(), "batch_size": batch},
    }
    try:
        return config_from_dict(merge_mappings(raw, update))
    except ConfigError as exc:
        raise ConfigError(f"{SECTION}.cases.{key} (batch {batch}): {exc}") from None
