"""`run.py cross-validate`: K-fold cross-validation by subject, stratified by site, in one folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.commands.common import (add_backend_argument, add_config_arguments, add_out_argument,
                                     add_score_workers_argument, seed_list)
from mrsynth.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_backend_argument(parser)
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    parser.add_argument("--train-seeds", type=seed_list, metavar="S,...",
                        help="training seeds, comma-separated: one whole cross-validation per seed in OUT/seed-<S>/ "
                             "(the same folds), then OUT/summary.md pools them (each subject averaged over the "
                             "seeds; each seed's margins beside it). Default: one cross-validation in OUT, "
                             "trained with the config's train.seed")
    add_score_workers_argument(parser)
    add_out_argument(parser, "the cross-validation folder: a later call with the same settings continues it "
                             "(finished folds kept, an interrupted fold resumed)", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    from mrsynth.experiments.crossval import cross_validate
    from mrsynth.experiments.crossval_seeds import cross_validate_seeds

    cfg = load_config(args.config, args.overrides)
    if args.train_seeds is None:
        summary = cross_validate(cfg, args.backend, args.out, args.folds, args.seed, score_workers=args.score_workers)
    else:
        summary = cross_validate_seeds(cfg, args.backend, args.out, args.train_seeds, args.folds, args.seed,
                                       score_workers=args.score_workers)
    run_method = next(iter(summary["methods"]))
    stats = summary["methods"][run_method]
    seeds = "" if args.train_seeds is None else f", each averaged over {len(args.train_seeds)} training seed(s)"
    print(f"cross-validated {summary['subjects']} subjects{seeds}: {run_method} psnr_z "
          f"{stats['psnr_z']['mean']:.2f} dB, ssim_z {stats['ssim_z']['mean']:.3f} (mean over the held-out subjects)")
    for seed, row in summary.get("per_seed", {}).items():
        print(f"  seed {seed}: psnr_z margin {row['psnr_z']['margin']:+.2f} dB, ssim_z margin "
              f"{row['ssim_z']['margin']:+.3f} over the better baseline")
    print(f"summary: {Path(args.out) / 'summary.md'}")
    return 0
