"""`run.py train` (the default command): train a model, or resume an interrupted run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrsynth.commands.common import add_backend_argument, add_config_arguments
from mrsynth.config import load_config
from mrsynth.training import rundir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_argument(parser)
    add_config_arguments(parser)
    parser.add_argument("--run-dir", type=Path, help="where to write the run (default: runs/<name>-<backend>-<time>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted run from its last checkpoint (uses its config.yaml; "
                             "--set still applies, e.g. more train.steps)")


def run(args: argparse.Namespace) -> int:
    from mrsynth.training.loop import train

    if args.resume is not None:
        info = rundir.read_run_info(args.resume)
        cfg = rundir.load_run_config(args.resume, args.overrides)
        summary = train(cfg, info["backend"], args.resume, resume=True)
    else:
        cfg = load_config(args.config, args.overrides)
        summary = train(cfg, args.backend, args.run_dir, resume=False)
    print(json.dumps(summary, indent=2))
    return 0
