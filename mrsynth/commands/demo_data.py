"""`run.py demo-data`: write the built-in phantom as IXI-named NIfTI files (T1, T2, mask, labels)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mrsynth.commands.common import add_out_argument
from mrsynth.console import progress_enabled
from mrsynth.phantom.dataset import MAX_SUBJECTS, STORED_AXCODES, regenerate_phantom
from mrsynth.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out_argument(parser, "output folder, replaced as a whole (default: data/phantom)", type=Path,
                     default=Path("data/phantom"))
    parser.add_argument("--subjects", type=int, default=12, help="number of subjects, 1..99 (default: 12)")
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 112, 80), metavar=("X", "Y", "Z"),
                        help="RAS+ grid size in 2 mm voxels (default: 96 112 80)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.subjects <= MAX_SUBJECTS:
        raise ConfigError(f"--subjects: must be 1..{MAX_SUBJECTS}, got {args.subjects}")
    if min(args.shape) < 16:
        raise ConfigError(f"--shape: needs 3 sizes of at least 16, got {list(args.shape)}")
    start = time.perf_counter()
    paths = regenerate_phantom(args.out, args.subjects, tuple(args.shape), args.seed, progress=progress_enabled())
    seconds = time.perf_counter() - start
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    subjects = sorted({path.name.split("-")[0] for path in paths})
    grid = " x ".join(map(str, args.shape))
    print(f"wrote {len(subjects)} phantom subjects ({len(paths)} files, {megabytes:.1f} MB) to {args.out}: "
          f"{subjects[0]}..{subjects[-1]}, grid {grid} (RAS+), stored as {''.join(STORED_AXCODES)}")
    print(f"took {seconds:.1f} s ({seconds / len(subjects):.2f} s per subject)")
    return 0
