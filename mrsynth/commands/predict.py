"""`run.py predict`: synthesize T2 NIfTI files for T1-only subjects."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrsynth import backend as backends
from mrsynth.commands.common import add_backend_argument
from mrsynth.errors import MrsynthError
from mrsynth.training import rundir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser, default=None)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, metavar="RUN_DIR", help="a training run directory")
    source.add_argument("--weights", type=Path, metavar="FILE", help="a portable .safetensors weight file")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="which checkpoint of the run (default: best)")
    parser.add_argument("--input", type=Path, required=True, help="a T1 NIfTI file or a directory of them")
    parser.add_argument("--output", type=Path, required=True, help="directory for the synthesized T2 files")


def run(args: argparse.Namespace) -> int:
    from mrsynth.synthesis import list_inputs, setup_from_run, setup_from_weights, synthesize_files

    inputs = list_inputs(args.input)
    if args.checkpoint is not None:
        backend_name = args.backend or rundir.read_run_info(args.checkpoint)["backend"]
        setup = setup_from_run(args.checkpoint)
        predictor = backends.get_backend(backend_name).load_predictor(args.checkpoint, args.which)
    else:
        if args.backend is None:
            raise MrsynthError("--weights needs --backend jax|torch (either framework reads the file)")
        setup = setup_from_weights(args.weights)
        predictor = backends.get_backend(args.backend).load_predictor(args.weights)
    written, failures = synthesize_files(inputs, args.output, predictor, setup)
    for path in written:
        print(f"wrote {path}")
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    return 1 if failures else 0
