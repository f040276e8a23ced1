"""`run.py export`: a run's checkpoint as a portable weight file for either framework."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth import backend as backends
from mrsynth.commands.common import add_out_argument
from mrsynth.errors import MrsynthError
from mrsynth import runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="RUN_DIR", help="a training run directory")
    add_out_argument(parser, "output .safetensors file", type=Path, required=True)
    parser.add_argument("--which", choices=("best", "last"), default="best")


def run(args: argparse.Namespace) -> int:
    from mrsynth.fileio import make_folder

    if args.out.is_dir():
        raise MrsynthError(f"--out {args.out}: is a folder; give a file name, e.g. {args.out / 'model.safetensors'}")
    make_folder(args.out.parent, f"--out {args.out}")
    backend_name = runs.read_run_info(args.checkpoint)["backend"]
    backends.get_backend(backend_name).export_weights(args.checkpoint, args.out, args.which)
    print(f"wrote {args.out}")
    return 0
