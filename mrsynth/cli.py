"""The command line: parses arguments, loads the config, dispatches to one command module.

Each subcommand lives in ``mrsynth/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them and turns user errors into one-line messages.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mrsynth.errors import Interrupted, MrsynthError

# name -> (module under mrsynth.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (the default command)"),
    "predict": ("predict", "synthesize T2 NIfTI files from T1 inputs"),
    "evaluate": ("evaluate", "metrics, figures and a report for a trained run on held-out subjects"),
    "compare": ("compare", "one report comparing runs (both backends) and the baselines"),
    "benchmark": ("benchmark", "backend speed report (step time, throughput, memory)"),
    "parity": ("parity", "check that the JAX and PyTorch backends compute the same function"),
    "export": ("export", "write a run's checkpoint as a portable safetensors weight file"),
    "demo-data": ("demo_data", "write the built-in phantom as IXI-named NIfTI pairs"),
    "prepare-ixi": ("prepare_ixi", "register and resample raw IXI T1/T2 into training-ready pairs"),
    "download-ixi": ("download_ixi", "download and safely extract the IXI T1 and T2 archives"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="mrsynth: T1w -> T2w brain MR synthesis (JAX/Flax and PyTorch backends).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module = _load(module_name)
        if module is None:
            sp.set_defaults(_missing=name)
        else:
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def _load(module_name: str):
    try:
        return importlib.import_module(f"mrsynth.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"mrsynth.commands.{module_name}":
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]  # train is the default command
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"error: '{args._missing}' is not implemented yet", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except MrsynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
