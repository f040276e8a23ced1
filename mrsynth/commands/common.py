"""Arguments several commands share (backend, config, overrides)."""
from __future__ import annotations

import argparse

from mrsynth.backend import BACKENDS


def add_backend_argument(parser: argparse.ArgumentParser, default: str | None = "jax") -> None:
    parser.add_argument("--backend", choices=sorted(BACKENDS), default=default,
                        help=f"framework that runs the model (default: {default})")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML config (default: the built-in defaults, identical to configs/demo.yaml "
                             "and usable from any directory)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=100 (repeatable)")
