"""Arguments several commands share (backend, config, overrides, output, terminal output)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mrsynth.backend import BACKENDS

# Terminal options every command takes, before or after the command name.
TERMINAL_FLAGS = ("-q", "--quiet", "-v", "-vv", "--verbose", "--no-progress")


def program_name() -> str:
    """How the user called us, for usage lines and hints: ``python run.py`` or ``mrsynth``."""
    return "python run.py" if Path(sys.argv[0]).name == "run.py" else "mrsynth"


def add_backend_argument(parser: argparse.ArgumentParser, default: str | None = "jax",
                         default_text: str | None = None) -> None:
    """``--backend``; ``default_text`` says in words what an absent flag means."""
    parser.add_argument("--backend", choices=sorted(BACKENDS), default=default,
                        help=f"framework that runs the model (default: {default_text or default})")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML config (default: the built-in defaults, identical to configs/demo.yaml "
                             "and usable from any directory)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")


def add_out_argument(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> None:
    """The one name for where a command writes: ``--out`` (``--output`` is accepted too)."""
    parser.add_argument("--out", "--output", dest="out", help=help, **kwargs)


def add_score_workers_argument(parser: argparse.ArgumentParser) -> None:
    """``--score-workers``: processes that score held-out subjects beside the synthesis."""
    parser.add_argument("--score-workers", type=_non_negative, default=0, metavar="N",
                        help="processes that score each subject's metrics while the next subject is synthesized "
                             "(default 0: score in this process); each holds one subject's volumes; the "
                             "metrics are the same")


def seed_list(text: str) -> list[int]:
    """``--seeds``-style argument: comma-separated integers, returned sorted without repeats."""
    try:
        return sorted({int(s) for s in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def add_terminal_arguments(parser: argparse.ArgumentParser, inherit: bool = False) -> None:
    """-q/--quiet, -v/--verbose, --no-progress. ``inherit``: a subcommand's copy, whose absent
    flags leave the values given before the command name in place."""
    default = {"default": argparse.SUPPRESS} if inherit else {}
    parser.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only", **default)
    parser.add_argument("-v", "--verbose", action="count", help="also show debug messages (every logged "
                        "training step)", **(default or {"default": 0}))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and batch jobs)",
                        **default)
