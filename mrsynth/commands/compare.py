"""`run.py compare`: one report with several runs (typically JAX and PyTorch) and the baselines.

Either compare existing run directories, or give ``--config`` to train the config with both
backends first and then compare the two runs.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mrsynth.backend import BACKENDS
from mrsynth.commands.common import add_out_argument, add_score_workers_argument
from mrsynth.errors import ConfigError
from mrsynth.evaluation.views import CONVENTIONS
from mrsynth.subjects import SUBJECT_CHOICES

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help="training run directories")
    parser.add_argument("--config", type=Path,
                        help="train this config with every backend (--backends), then compare the runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for --config (repeatable)")
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKENDS), default=["jax", "torch"],
                        help="backends trained with --config (default: jax torch)")
    parser.add_argument("--subjects", choices=SUBJECT_CHOICES, default="test",
                        help="which split to evaluate (default: test)")
    parser.add_argument("--display", choices=CONVENTIONS, default="neurological",
                        help="figures: the patient's left on the image's left (neurological, default) or "
                             "right (radiological)")
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="which checkpoint of each run (default: best)")
    add_score_workers_argument(parser)
    add_out_argument(parser, "report directory (default: <first run's parent>/compare_<subjects>)", type=Path)


def run(args: argparse.Namespace) -> int:
    from mrsynth.evaluation.runner import evaluate_runs, load_run, print_summary  # as in evaluate.run

    run_dirs = list(args.run_dirs)
    if args.config is not None:
        if run_dirs:
            raise ConfigError("compare: give run directories or --config, not both")
        run_dirs = train_all(args.config, args.overrides, args.backends)
    elif args.overrides:
        raise ConfigError("compare: --set applies only with --config")
    if not run_dirs:
        raise ConfigError("compare: give at least one RUN_DIR, or --config to train one run per backend")
    runs = [load_run(d, args.which) for d in run_dirs]
    out = args.out or Path(run_dirs[0]).parent / f"compare_{args.subjects}"
    result, report = evaluate_runs(runs, args.subjects, out,
                                   title="mrsynth comparison: " + " vs ".join(r.backend for r in runs) + " vs baselines",
                                   convention=args.display, score_workers=args.score_workers)
    print_summary(result, report)
    return 0


def train_all(config: Path, overrides: list[str], backends: list[str]) -> list[Path]:
    """Train the same config once per backend; return the run directories."""
    from mrsynth.config import load_config
    from mrsynth.training.loop import train

    cfg = load_config(config, overrides)
    run_dirs = []
    for backend in backends:
        log.info("training with %s ...", backend)
        summary = train(cfg, backend, None, resume=False)
        run_dirs.append(Path(summary["run_dir"]))
    return run_dirs
