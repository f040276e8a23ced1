"""`run.py benchmark`: both backends side by side (step time, throughput, TFLOP/s, memory, scaling).

    python run.py benchmark                                   # configs/bench_cpu.yaml, ~2 min on 2 CPU cores
    python run.py benchmark --config configs/bench_gpu.yaml   # DESIGN.md's H100 anchors
    python run.py benchmark --dims 2 --variants float32,bfloat16 --batch 8,16 --steps 30 --backends jax
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from mrsynth.commands.common import add_out_argument
from mrsynth.errors import ConfigError

DEFAULT_CONFIG = "configs/bench_cpu.yaml"


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"bench YAML: a run config plus a 'benchmark:' section (default: {DEFAULT_CONFIG})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a value, e.g. --set benchmark.rounds=4 or --set data.workers=2 (repeatable)")
    parser.add_argument("--backends", type=_names, help="comma list: jax,torch")
    parser.add_argument("--dims", type=_ints, help="comma list: 2,3")
    parser.add_argument("--variants", type=_names,
                        help="comma list of precision[+switches]: float32, tf32, bfloat16; torch: +compile, "
                             "+autotune (compile mode max-autotune), +compileopt (compiled optimizer step), +cl "
                             "(channels-last); jax: +pmap, +native3d. e.g. float32,bfloat16,bfloat16+autotune+cl+compileopt "
                             "(mrsynth/bench/variants.py)")
    parser.add_argument("--batch", type=_ints, help="batch sizes to sweep (comma list), for every selected dims")
    parser.add_argument("--size", type=_ints,
                        help="sample size: one number (square/cube) or one per axis, e.g. 256,256 or 32,128,128")
    parser.add_argument("--steps", type=int, help="timed steps per backend and variant")
    parser.add_argument("--warmup", type=int, help="untimed steps after the first (compiling) one")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak TFLOP/s for the %% of peak column (default: measured matmul)")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the grain-loader measurements")
    parser.add_argument("--no-inference", action="store_true", help="skip whole-volume inference")
    parser.add_argument("--no-scaling", action="store_true", help="skip the multi-device scaling subprocesses (JAX, torch DDP)")
    parser.add_argument("--scaling-devices", type=_ints, help="device counts for scaling (JAX devices, torch DDP processes), e.g. 1,2,4")
    add_out_argument(parser, "report directory (default: reports/bench-<time>)", type=Path)


def _apply_arguments(settings, args: argparse.Namespace) -> None:
    """Command-line options win over the config's benchmark section."""
    for name in ("backends", "dims", "variants", "steps", "warmup", "peak_tflops", "scaling_devices"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    settings.pipeline &= not args.no_pipeline
    settings.inference &= not args.no_inference
    settings.scaling &= not args.no_scaling
    for dims in settings.dims:
        case = settings.cases.get(f"{dims}d")
        if case is None:
            continue
        if args.batch is not None:
            case.batch = list(args.batch)
        if args.size is not None:
            if len(args.size) == 1:
                case.size = args.size * dims
            elif len(args.size) == dims:
                case.size = list(args.size)
            else:
                raise ConfigError(f"--size: {len(args.size)} numbers do not fit {dims}D (give 1 or {dims})")
    if settings.steps < 1 or settings.warmup < 0:
        raise ConfigError("--steps must be >= 1 and --warmup >= 0")


def run(args: argparse.Namespace) -> int:
    # Both frameworks share one GPU here: JAX must not grab 75% of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from mrsynth.bench.report import terminal_summary, write_report
    from mrsynth.bench.runner import Benchmark
    from mrsynth.bench.settings import load_bench_config

    settings, raw = load_bench_config(args.config, args.overrides)
    _apply_arguments(settings, args)
    out = args.out or Path("reports") / f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    results = Benchmark(settings, raw).run()
    called_from_cli = Path(sys.argv[0]).name in ("run.py", "mrsynth")
    results["command"] = shlex.join(["python", "run.py", *sys.argv[1:]]) if called_from_cli else "in-process call"
    results["config_file"] = str(args.config)
    print(terminal_summary(results))
    write_report(results, out)
    print(f"\nreport: {out}")
    return 0
