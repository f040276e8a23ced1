"""`run.py learning-curve`: the margin over the baselines against the number of training subjects."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.commands.common import (add_backend_argument, add_config_arguments, add_out_argument,
                                     add_score_workers_argument, seed_list)
from mrsynth.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_backend_argument(parser)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,all",
                        help="numbers of training subjects, comma-separated; 'all' = every subject outside the "
                             "held-out fold (default 1,2,4,8,16,32,all)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2],
                        help="seeds, comma-separated: each draws its own subjects and initializes its own model "
                             "(default 0,1,2)")
    parser.add_argument("--fold", type=int, default=0, help="the held-out fold that scores every point (default 0)")
    parser.add_argument("--folds", type=int, default=5,
                        help="number of folds of the site-stratified split, as cross-validate's (default 5)")
    add_score_workers_argument(parser)
    add_out_argument(parser, "the learning-curve folder: a later call with the same settings continues it",
                     type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    from mrsynth.experiments.learning_curve import learning_curve

    cfg = load_config(args.config, args.overrides)
    rows = learning_curve(cfg, args.backend, args.out, args.sizes, args.seeds, args.fold, args.folds,
                          score_workers=args.score_workers)
    for n in sorted({r["n"] for r in rows}):
        at = [r for r in rows if r["n"] == n]
        print(f"{n} training subject(s), {len(at)} seed(s): psnr_z margin "
              f"{sum(r['psnr_z_margin'] for r in at) / len(at):+.2f} dB, ssim_z margin "
              f"{sum(r['ssim_z_margin'] for r in at) / len(at):+.3f} over the better baseline")
    print(f"curve: {Path(args.out) / 'curve.md'}")
    return 0
