"""``prepare-ixi``: raw IXI T1/T2 folders -> registered, resampled pairs and a manifest CSV.

The preparation needs SimpleITK (``pip install 'mrsynth[ixi]'``); it is imported only when the
command runs, so every other command works without it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.extras import import_optional
from mrsynth.commands.common import add_out_argument
from mrsynth.console import progress_enabled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t1-dir", type=Path, required=True, help="folder of IXI*-T1.nii.gz files")
    parser.add_argument("--t2-dir", type=Path, required=True, help="folder of IXI*-T2.nii.gz files")
    add_out_argument(parser, "output folder (manifest.csv, subjects/, qc/)", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1, help="parallel subject processes (default 1)")
    parser.add_argument(
        "--grid",
        default="course",
        help="output grid: t1 (keep the T1 voxels), iso:MM (isotropic), course (90x120x120 RAS "
        "at 2 mm around the head = the course's 120x120x90 PSR volumes; default)",
    )
    parser.add_argument("--n4", action="store_true", help="N4 bias-field correction of T1 and T2")
    parser.add_argument("--normalize", default="none", choices=("none", "zscore", "wm_peak"),
                        help="intensity normalization written into the files (default none: the "
                        "training pipeline normalizes)")
    parser.add_argument("--skull-strip", action="store_true",
                        help="write brain masks by brain extraction (default: Otsu head masks); "
                             "optional extra: pip install 'mrsynth[skullstrip]'")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions (by subject)")
    parser.add_argument("--stratify-site", action="store_true", help="split each IXI site separately")
    parser.add_argument("--qc-samples", type=int, default=8, help="subjects with a QC overlay PNG in out/qc/")
    parser.add_argument("--seed", type=int, default=0, help="registration sampling, QC choice and split seed")


def run(args: argparse.Namespace) -> int:
    prepare = import_optional("mrsynth.ixi.prepare", "prepare-ixi")
    fractions = prepare.parse_fractions(args.split)
    settings = prepare.PrepareSettings(grid=args.grid, n4=args.n4, normalize=args.normalize, seed=args.seed,
                                       skull_strip=args.skull_strip)
    summary = prepare.prepare_ixi(
        args.t1_dir,
        args.t2_dir,
        args.out,
        settings,
        workers=args.workers,
        fractions=fractions,
        stratify_site=args.stratify_site,
        qc_samples=args.qc_samples,
        progress=progress_enabled(),
    )
    print(summary.line())
    if summary.n_ok:
        print(f"manifest: {summary.manifest}")
    # A failed subject is a silently smaller data set unless the exit code says so.
    return 0 if summary.n_ok and not summary.failed else 1
