"""`mrsynth export`: a run's checkpoint as a portable weight file for either framework, or the
synthesis network as an ONNX model (from the portable weights through the PyTorch U-Net)."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
from pathlib import Path

from mrsynth import backend as backends
from mrsynth.commands.common import add_out_argument
from mrsynth.errors import MrsynthError
from mrsynth.extras import missing_extra_message
from mrsynth import runs

FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx"}
ONNX_MODULES = ("onnx", "onnxscript")  # torch's ONNX exporter needs both


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, metavar="RUN_DIR", help="a training run directory")
    source.add_argument("--weights", type=Path, metavar="FILE",
                        help="a portable .safetensors weight file (with --format onnx)")
    add_out_argument(parser, "output file: .safetensors, or .onnx with --format onnx; the model card "
                             "is written beside it as <name>.md", type=Path, required=True)
    parser.add_argument("--format", choices=tuple(FORMATS), default="safetensors",
                        help="safetensors: the portable weights (default); onnx: the network for ONNX "
                             "runtimes (needs pip install 'mrsynth[onnx]')")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="which checkpoint of the run (default: best)")


def _check_out(out: Path, fmt: str) -> None:
    if out.is_dir():
        raise MrsynthError(f"--out {out}: is a folder; give a file name, e.g. {out / ('model' + FORMATS[fmt])}")
    other = next((f for f, suffix in FORMATS.items() if f != fmt and out.suffix == suffix), None)
    if other is not None:
        raise MrsynthError(f"--out {out}: a {FORMATS[other]} name for a {fmt} file; add --format {other} "
                           f"or name it {out.with_suffix(FORMATS[fmt]).name}")


def run(args: argparse.Namespace) -> int:
    from mrsynth.fileio import make_folder
    from mrsynth.inference.synthesis import exported_checkpoint

    _check_out(args.out, args.format)
    if args.format == "safetensors" and args.weights is not None:
        raise MrsynthError(f"--weights {args.weights}: is already a portable file; --format onnx converts it")
    if args.format == "onnx":
        missing = next((m for m in ONNX_MODULES if importlib.util.find_spec(m) is None), None)
        if missing is not None:
            raise MrsynthError(missing_extra_message(missing, "export --format onnx"))
    make_folder(args.out.parent, f"--out {args.out}")
    if args.weights is not None:
        weights = contextlib.nullcontext(args.weights)
    else:
        backend = backends.get_backend(runs.read_run_info(args.checkpoint)["backend"])
        if args.format == "safetensors":  # a run's export always carries the run's model card
            backend.export_weights(args.checkpoint, args.out, args.which)
            print(f"wrote {args.out} and its model card {args.out.with_suffix('.md')}")
            return 0
        weights = exported_checkpoint(backend, args.checkpoint, args.which)
    torch_weights = backends.import_backend_module("torch", {"torch": "torch_ref.weights"})
    with weights as portable:
        card = torch_weights.export_onnx(portable, args.out)
    print(f"wrote {args.out}" + (f" and its model card {card}" if card else ""))
    return 0
