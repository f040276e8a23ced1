"""The command line (``mrsynth COMMAND`` or ``python run.py COMMAND``): parses arguments, sets up
the terminal, dispatches to one command module.

Each subcommand lives in ``mrsynth/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them and turns user errors into one-line messages.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence

import mrsynth
from mrsynth import console
from mrsynth.commands.common import TERMINAL_FLAGS, add_terminal_arguments, program_name
from mrsynth.errors import Interrupted, MrsynthError

# name -> (module under mrsynth.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (the default command)"),
    "predict": ("predict", "synthesize T2 NIfTI files from T1 inputs"),
    "evaluate": ("evaluate", "metrics, figures and a report for a trained run on held-out subjects"),
    "cross-validate": ("cross_validate", "K-fold cross-validation by subject, stratified by site: train, "
                                         "evaluate and summarize every fold"),
    "learning-curve": ("learning_curve", "the margin over the baselines against the number of training subjects, "
                                         "over seeds"),
    "compare": ("compare", "one report comparing runs (both backends) and the baselines"),
    "benchmark": ("benchmark", "backend speed report (step time, throughput, memory)"),
    "parity": ("parity", "check that the JAX and PyTorch backends compute the same function"),
    "export": ("export", "write a run's checkpoint as a portable safetensors weight file or an ONNX model"),
    "demo-data": ("demo_data", "write the built-in phantom as IXI-named NIfTI pairs"),
    "prepare-ixi": ("prepare_ixi", "register and resample raw IXI T1/T2 into training-ready pairs"),
    "download-ixi": ("download_ixi", "download and safely extract the IXI T1 and T2 archives"),
}
TOP_LEVEL_FLAGS = ("-h", "--help", "--version")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="mrsynth: T1w -> T2w brain MR synthesis (JAX/Flax and PyTorch backends). "
                    "'train' is the default command.",
    )
    parser.add_argument("--version", action="version", version=f"mrsynth {mrsynth.__version__}")
    add_terminal_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_terminal_arguments(sp, inherit=True)
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


def with_command(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` with ``train`` inserted where no command is named (train is the default command).

    A bare word where the command goes is a mistyped command, not a train argument: argparse's
    "invalid choice" with the closest command, instead of "unrecognized arguments".
    """
    at = 0
    while at < len(argv) and argv[at] in TERMINAL_FLAGS:
        at += 1
    word = argv[at] if at < len(argv) else None
    if word in COMMANDS or word in TOP_LEVEL_FLAGS:
        return argv
    if word is None or word.startswith("-"):
        return [*argv[:at], "train", *argv[at:]]
    closest = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    hint = f"; did you mean '{closest[0]}'?" if closest else ""
    parser.error(f"argument COMMAND: invalid choice: '{word}'{hint} (choose from {', '.join(COMMANDS)})")
    raise AssertionError("unreachable: parser.error exits")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_command(list(sys.argv[1:] if argv is None else argv), parser))
    if getattr(args, "_missing", None):
        print(f"error: '{args._missing}' is not implemented yet", file=sys.stderr)
        return 2
    level = console.console_level(args.quiet, args.verbose)
    with console.terminal(level, progress=not (args.no_progress or args.quiet)):
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
