"""The benchmark procedure, framework-free: cases x variants x backends, alternating backends.

For every case (dims, batch, sample size) and variant, one session per backend is opened (the
backend's own engine: model, optimizer, compiled step), then:

1. first step (compile / autotune), ``warmup`` untimed steps per backend;
2. ``steps`` timed steps on a device-resident synthetic batch, in ``rounds`` chunks that
   alternate jax, torch, jax, torch... so machine drift hits both backends alike;
3. training steps fed by the real grain loader (cached phantom NIfTI volumes, the config's
   augmentation) through the training loop's device prefetch: the end-to-end rate, next to the
   loader's own rate measured alone. The loader's buffer and the prefetch are drained first and
   the timed window is longer than they hold (:func:`~mrsynth.bench.backends.pipeline_window`),
   so the rate is the pipeline's, not the buffers';
4. whole-volume synthesis of ``inference_subjects`` volumes through
   :func:`mrsynth.inference.volume.synthesize_volume` (after one untimed warm-up volume);
5. memory: device peak (where the platform reports it) and the host's RSS.

Then weak scaling over 1..N devices in subprocesses (:mod:`mrsynth.bench.scaling`): JAX sharded
jit and pmap, torch DDP under torchrun.
"""
from __future__ import annotations

import dataclasses
import math
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from mrsynth.architecture import describe
from mrsynth.config import Config, ModelConfig
from mrsynth.subjects import available_pairs
from mrsynth.data.loader import make_train_loader
from mrsynth.data.preprocess import Volume, fit_training_normalization, load_volume
from mrsynth.errors import ConfigError
from mrsynth.inference.volume import synthesize_volume

from mrsynth.bench import flops, scaling
from mrsynth.bench.backends import (BackendBench, TrainSession, first_step_seconds, load_bench, pipeline_seconds,
                                    pipeline_window, step_seconds)
from mrsynth.bench.machine import host_info, host_memory
from mrsynth.bench.session import synthetic_batch
from mrsynth.bench.settings import BenchSettings, case_config
from mrsynth.bench.stats import summarize, tflops, throughput
from mrsynth.bench.variants import Variant

Log = Callable[[str], None]


def _log_progress(message: str) -> None:
    """Progress lines of a benchmark: on the terminal (stderr) unless -q."""
    logging.getLogger(__name__).info(message)


def network_figures(model: ModelConfig, size: list[int], batch: int) -> dict[str, int | None]:
    """Parameters and FLOPs from the architecture's description (None where it has none)."""
    net = describe(model)
    if net is None:
        return {"parameters": None, "forward_flops": None, "train_step_flops": None}
    return {"parameters": net.parameter_count(), "forward_flops": flops.forward_flops(net, size, batch),
            "train_step_flops": flops.train_step_flops(net, size, batch)}


def _chunks(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def load_volumes(cfg: Config) -> list[Volume]:
    """The configured subjects (phantom generated on first use), preprocessed through the cache."""
    pairs = available_pairs(cfg.data)
    data_cfg = fit_training_normalization(cfg.data, pairs)
    return [load_volume(files, data_cfg) for files in pairs]


def measure_loader(loader: Any, steps: int, batch: int) -> dict[str, float]:
    """The loader's own rate: batches read back to back, after two warm-up batches."""
    for _ in range(2):
        next(loader)
    start = time.perf_counter()
    for _ in range(steps):
        next(loader)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "batches": steps, "samples_per_s": steps * batch / seconds}


def measure_inference(session: TrainSession, volumes: list[Volume], cfg: Config, subjects: int) -> dict[str, Any]:
    """Seconds per whole volume (first call separately: it compiles)."""
    predictor = session.predictor()
    start = time.perf_counter()
    synthesize_volume(volumes[0].t1, predictor, cfg.data, cfg.eval)
    first = time.perf_counter() - start
    times = []
    for i in range(subjects):
        volume = volumes[i % len(volumes)]
        start = time.perf_counter()
        synthesize_volume(volume.t1, predictor, cfg.data, cfg.eval)
        times.append(time.perf_counter() - start)
    shape = list(volumes[0].t1.shape)
    median = float(np.median(times))
    return {"first_s": first, "seconds": times, "median_s": median, "volume_shape": shape,
            "voxels_per_s": math.prod(shape) / median,
            "mode": "2D slice-wise" if cfg.model.dims == 2 else "3D patch-wise"}


def _train_row(case: dict[str, Any], backend: str, variant: Variant, session: TrainSession, first: float,
               times: list[float], peak: float | None) -> dict[str, Any]:
    step = summarize(times)
    median = step["median_ms"]
    achieved = tflops(case["train_step_flops"], median)
    return {
        "case": case["id"], "dims": case["dims"], "batch": case["batch"], "size": case["size"],
        "backend": backend, "variant": variant.name, "settings": session.settings,
        "first_step_s": first, "compile_s_estimate": max(0.0, first - median / 1e3),
        "step": step,
        "samples_per_s": throughput(case["batch"], median),
        "voxels_per_s": throughput(case["batch"] * math.prod(case["size"]), median),
        "tflops": achieved,
        "peak_tflops": peak,
        "peak_fraction": achieved / peak if peak and achieved is not None else None,
    }


class Benchmark:
    """One benchmark run; :meth:`run` returns the JSON-able results (every raw figure)."""

    def __init__(self, settings: BenchSettings, raw_config: dict[str, Any], log: Log = _log_progress) -> None:
        self.settings = settings
        self.raw_config = raw_config
        self.log = log
        self.variants = settings.parsed_variants()
        for dims in settings.dims:
            if f"{dims}d" not in settings.cases:
                raise ConfigError(f"benchmark.cases.{dims}d: no batch/size/model given for dims {dims}")
            for batch in settings.cases[f"{dims}d"].batch:  # fail before any measurement
                for variant in self.variants:
                    case_config(raw_config, dims, settings.cases[f"{dims}d"], batch, variant)
        self.benches: dict[str, BackendBench] = {name: load_bench(name) for name in settings.backends}
        for bench in self.benches.values():
            bench.configure(settings)

    # --- peaks ----------------------------------------------------------------------------
    def peaks(self) -> dict[str, Any]:
        """One TFLOP/s ceiling per precision, shared by every backend so their "% of peak" compare:
        the user's number, or the highest of the backends' measured square matmuls (each backend's
        own measurement is kept in ``measured``)."""
        precisions = sorted({v.precision for v in self.variants})
        if self.settings.peak_tflops:
            return {"source": "user (--peak-tflops)",
                    "shared": {p: float(self.settings.peak_tflops) for p in precisions}, "measured": {}}
        measured: dict[str, dict[str, float]] = {}
        for name, bench in self.benches.items():
            measured[name] = {p: bench.matmul_tflops(p, self.settings.matmul_size) for p in precisions}
            self.log(f"[{name}] matmul peak: " + ", ".join(f"{p} {v:.3g} TFLOP/s" for p, v in measured[name].items()))
        shared = {p: max(m[p] for m in measured.values()) for p in precisions}
        return {"source": "the highest of the backends' measured square matmuls",
                "shared": shared, "measured": measured}

    # --- one case -------------------------------------------------------------------------
    def _case(self, dims: int, batch: int) -> dict[str, Any]:
        case_settings = self.settings.cases[f"{dims}d"]
        cfg = case_config(self.raw_config, dims, case_settings, batch, self.variants[0])
        size = list(cfg.data.patch_size)
        return {
            "id": f"{dims}d-b{batch}-{'x'.join(map(str, size))}",
            "dims": dims, "batch": batch, "size": size,
            "model": dataclasses.asdict(cfg.model),
            **network_figures(cfg.model, size, batch),
        }

    def _run_variant(self, case: dict[str, Any], variant: Variant, peaks: dict[str, float],
                     volumes: list[Volume], loader: Any) -> list[dict[str, Any]]:
        s = self.settings
        dims, batch = case["dims"], case["batch"]
        cfg = case_config(self.raw_config, dims, s.cases[f"{dims}d"], batch, variant)
        names = [b for b in self.benches if variant.applies_to(b)]
        data = synthetic_batch(batch, case["size"], cfg.model.in_channels)
        sessions: dict[str, TrainSession] = {}
        rows: dict[str, dict[str, Any]] = {}
        try:
            first: dict[str, float] = {}
            for name in names:
                sessions[name] = self.benches[name].open_session(cfg, data)
                first[name] = first_step_seconds(sessions[name])
                step_seconds(sessions[name], s.warmup)
                self.log(f"[{name} {case['id']} {variant.name}] first step {first[name]:.2f} s")
            times: dict[str, list[float]] = {name: [] for name in names}
            for chunk in _chunks(s.steps, s.rounds):
                for name in names:  # alternate: drift hits every backend alike
                    times[name] += step_seconds(sessions[name], chunk)
            for name in names:
                row = _train_row(case, name, variant, sessions[name], first[name], times[name],
                                 peaks.get(variant.precision))
                if loader is not None:
                    drain, window = pipeline_window(loader.buffered_batches, s.pipeline_steps)
                    seconds = pipeline_seconds(sessions[name], loader, drain, window)
                    rate = window * batch / seconds
                    # A window's wall time is a sum of steps: compare it with the synthetic steps' mean
                    # (the median hides the slow tail that a shared machine adds to both).
                    fraction = rate / throughput(batch, row["step"]["mean_ms"])
                    row["pipeline"] = {"seconds": seconds, "steps": window, "drained": drain,
                                       "loader_buffer": loader.buffered_batches, "samples_per_s": rate,
                                       "fraction_of_synthetic_mean": fraction}
                    self.log(f"[{name} {case['id']} {variant.name}] pipeline {rate:.1f} samples/s over {window} steps "
                             f"(after draining {drain}: loader buffer {loader.buffered_batches} + device prefetch "
                             f"{drain - loader.buffered_batches}) = {fraction:.0%} of the synthetic mean step rate")
                if volumes and s.inference:
                    row["inference"] = measure_inference(sessions[name], volumes, cfg, s.inference_subjects)
                row["memory"] = {**sessions[name].memory(), **host_memory()}
                rows[name] = row
                achieved = "unknown" if row["tflops"] is None else f"{row['tflops']:.3g}"
                self.log(f"[{name} {case['id']} {variant.name}] median {row['step']['median_ms']:.1f} ms/step, "
                         f"{achieved} TFLOP/s")
        finally:
            for session in sessions.values():
                session.close()
        return [rows[name] for name in names]

    def _scaling(self, backend: str, dims: int, batch: int) -> dict[str, Any] | None:
        """Weak scaling of one backend (JAX: sharded jit / pmap; torch: DDP), with each row's
        efficiency: samples/s over (devices x the 1-device samples/s of the same mode)."""
        s = self.settings
        variants = [v for v in self.variants if v.applies_to(backend) and "pmap" not in v.switches]
        if not (s.scaling and dims in s.scaling_dims and backend in s.scaling_backends and backend in self.benches
                and variants):
            return None
        variant = variants[0]
        cfg = case_config(self.raw_config, dims, s.cases[f"{dims}d"], batch, variant)
        spec = {"config": cfg.to_dict(), "devices": sorted(set(s.scaling_devices)), "batch_per_device": batch,
                "steps": s.scaling_steps, "warmup": s.warmup}
        if backend == "jax":
            self.log(f"[jax scaling {dims}d] devices {spec['devices']}, modes {s.scaling_modes}, {variant.name}")
            result = scaling.run_jax_scaling({**spec, "modes": s.scaling_modes})
        else:
            info = self.benches[backend].device_info()
            available = info["device_count"] if info["platform"] == "cuda" else None
            self.log(f"[torch scaling {dims}d] devices {spec['devices']}, DDP, {variant.name}")
            result = scaling.run_torch_scaling({**spec, "torch_cpu_threads": s.torch_cpu_threads}, available)
        size = list(cfg.data.patch_size)
        base: dict[str, float] = {}
        for row in result["rows"]:
            if "step_s" not in row:
                continue
            row["step"] = summarize(row.pop("step_s"))
            row["samples_per_s"] = throughput(row["batch"], row["step"]["median_ms"])
            row["tflops"] = tflops(network_figures(cfg.model, size, row["batch"])["train_step_flops"],
                                   row["step"]["median_ms"])
            base.setdefault(row["mode"], row["samples_per_s"] / row["devices"])
            row["efficiency"] = row["samples_per_s"] / (row["devices"] * base[row["mode"]])
        return {"backend": backend, "dims": dims, "batch_per_device": batch, "size": size, "variant": variant.name,
                **result}

    # --- everything -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        s = self.settings
        started = datetime.now(timezone.utc)
        results: dict[str, Any] = {
            "created": started.isoformat(timespec="seconds"),
            "machine": host_info(),
            "devices": {name: bench.device_info() for name, bench in self.benches.items()},
            "settings": dataclasses.asdict(s),
            "config": self.raw_config,
            "flop_formula": flops.FORMULA,
            "cases": [], "train": [], "scaling": [],
        }
        results["peaks"] = self.peaks()
        for dims in s.dims:
            case_settings = s.cases[f"{dims}d"]
            volumes: list[Volume] = []
            if s.pipeline or s.inference:
                volumes = load_volumes(case_config(self.raw_config, dims, case_settings, case_settings.batch[0],
                                                   self.variants[0]))
            for batch in case_settings.batch:
                case = self._case(dims, batch)
                results["cases"].append(case)
                loader = None
                if s.pipeline:
                    cfg = case_config(self.raw_config, dims, case_settings, batch, self.variants[0])
                    loader = make_train_loader(volumes, cfg, batch_size=batch, seed=cfg.train.seed)
                    case["loader"] = measure_loader(loader, pipeline_window(loader.buffered_batches,
                                                                            s.pipeline_steps)[1], batch)
                    self.log(f"[loader {case['id']}] {case['loader']['samples_per_s']:.1f} samples/s alone")
                try:
                    for variant in (v for v in self.variants if v.applies_to_dims(dims)):
                        results["train"] += self._run_variant(case, variant, results["peaks"]["shared"], volumes,
                                                              loader)
                finally:
                    if loader is not None:
                        loader.close()
            for backend in self.benches:
                scaled = self._scaling(backend, dims, case_settings.batch[0])
                if scaled is not None:
                    results["scaling"].append(scaled)
        results["wall_s"] = (datetime.now(timezone.utc) - started).total_seconds()
        results["machine"]["load_average_end"] = host_info()["load_average"]
        return results
