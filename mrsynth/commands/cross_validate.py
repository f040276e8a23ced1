"""`run.py cross-validate`: K-fold cross-validation by subject, stratified by site, in one folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.commands.common import (add_backend_argument, add_config_arguments, add_out_argument,
                                     add_score_workers_argument)
from mrsynth.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_backend_argument(parser)
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    add_score_workers_argument(parser)
    add_out_argument(parser, "the cross-validation folder: a later call with the same settings continues it "
                             "(finished folds kept, an interrupted fold resumed)", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    from mrsynth.experiments.crossval import cross_validate

    cfg = load_config(args.config, args.overrides)
    summary = cross_validate(cfg, args.backend, args.out, args.folds, args.seed,
                             score_workers=args.score_workers)
    run_method = next(iter(summary["methods"]))
    stats = summary["methods"][run_method]
    print(f"cross-validated {summary['subjects']} subjects: {run_method} psnr_z {stats['psnr_z']['mean']:.2f} dB, "
          f"ssim_z {stats['ssim_z']['mean']:.3f} (mean over the held-out subjects)")
    print(f"summary: {Path(args.out) / 'summary.md'}")
    return 0
