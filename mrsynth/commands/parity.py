"""`run.py parity`: check that the JAX backend computes what the PyTorch reference computes.

Runs the cross-framework comparisons of ``parity_tests`` (weights both ways, forward, gradients,
AdamW step, BatchNorm statistics, a training trajectory, whole-volume synthesis, broken weight
files) on the chosen config's model and data, prints the table, writes it as JSON + Markdown,
and exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

from mrsynth.backend import library_versions
from mrsynth.commands.common import add_config_arguments, add_out_argument
from mrsynth.config import load_config
from mrsynth.errors import MrsynthError
from mrsynth.extras import import_optional
from mrsynth.parity.report import JSON_FILE, MARKDOWN_FILE, format_table, write_report
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES
from mrsynth.precision import PRECISIONS

PRECISION_CHOICES = (*PRECISIONS, "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="float32",
                        help="a named precision of mrsynth/precision.py: float32 (JAX 'highest' matmul "
                             "precision, torch TF32 off), tf32 (GPU: TF32 matmuls/convs in both; the same "
                             "as float32 on a CPU), bfloat16 (JAX bfloat16 compute vs torch autocast), "
                             "float64; or all (default: float32)")
    add_out_argument(parser, "report directory (default: reports/parity-<time>)", type=Path)
    parser.add_argument("--steps", type=int, default=50, help="training steps compared (default: 50)")
    parser.add_argument("--max-size", type=int, default=None, metavar="N",
                        help="cap each training patch dimension at N voxels, for speed")
    parser.add_argument("--tolerance", action="append", default=[], metavar="CHECK[.PRECISION]=VALUE",
                        help="replace a tolerance, e.g. --tolerance forward.float32=1e-6 (repeatable)")


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise MrsynthError(f"--steps: must be >= 1, got {args.steps}")
    driver = import_optional("parity_tests.driver", "parity")  # imports both frameworks
    cfg = driver.capped_patch(load_config(args.config, args.overrides), args.max_size)
    precisions = [p for p in PRECISION_CHOICES[:-1] if args.precision in (p, "all")]
    out = args.out or Path("reports") / f"parity-{datetime.now():%Y%m%d-%H%M%S}"
    tolerances = DEFAULT_TOLERANCES.with_overrides(args.tolerance)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mrsynth-parity-") as work:
        rows, facts = driver.run_parity(cfg, precisions, args.steps, Path(work), tolerances,
                                        log=logging.getLogger(__name__).info)
    context = {
        "config": str(args.config or "built-in defaults (= configs/demo.yaml)"),
        "overrides": list(args.overrides),
        "model": cfg.to_dict()["model"],
        "patch_size": list(cfg.data.patch_size),
        "precisions": precisions,
        **facts,
        "tolerances changed on the command line": tolerances.changed_from(DEFAULT_TOLERANCES) or "none",
        "host": platform.node(),
        "versions": library_versions(),
        "seconds": round(time.time() - started, 1),
    }
    write_report(out, rows, context)
    print(format_table(rows))
    failed = sum(not r.passed for r in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} checks pass; report: {out / JSON_FILE}, {out / MARKDOWN_FILE}")
    return 1 if failed else 0
