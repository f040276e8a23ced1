"""Training-loader throughput on phantom volumes: 2D slices/s and 3D patches/s.

For each (dims, workers, cache state) it builds a loader and reads batches:
- cold: an empty cache folder, so loader setup includes reading the .nii.gz files,
  reorientation, masking, normalization and writing the cache;
- warm: the cache from the cold run, so setup only memory-maps the arrays.
Reported: setup seconds, first-batch seconds (includes starting worker processes) and the
steady-state samples/s over the remaining batches.

    python benchmarks/loader_throughput.py                     # 4 subjects of 96x112x80
    python benchmarks/loader_throughput.py --subjects 2 --shape 48 56 40 --batches 10   # quick
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mrsynth.config import Config, DataConfig, ModelConfig
from mrsynth.data.discovery import discover_pairs
from mrsynth.data.loader import make_train_loader
from mrsynth.phantom.dataset import write_phantom_dataset


def measure(cfg: Config, batches: int, batch_size: int) -> dict[str, float]:
    pairs = discover_pairs(cfg.data)
    start = time.perf_counter()
    with make_train_loader(pairs, cfg, batch_size=batch_size, seed=0) as loader:
        setup = time.perf_counter() - start
        next(loader)
        first = time.perf_counter() - start - setup
        steady_start = time.perf_counter()
        for _ in range(batches - 1):
            next(loader)
        steady = time.perf_counter() - steady_start
    return {"setup_s": setup, "first_batch_s": first, "samples_per_s": (batches - 1) * batch_size / steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 112, 80))
    parser.add_argument("--batches", type=int, default=30, help="batches per measurement (>= 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--augment", action="store_true", help="flips + rotation/scaling + gamma + noise")
    parser.add_argument("--data-dir", type=Path, help="reuse/generate the phantom here (default: a temp folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mrsynth-loader-bench-"))
    data_dir = args.data_dir or work / "phantom"
    try:
        if not any(data_dir.glob("IXI*-T1.nii.gz")):
            start = time.perf_counter()
            write_phantom_dataset(data_dir, args.subjects, shape=tuple(args.shape), seed=0)
            print(f"phantom: {args.subjects} subjects of {tuple(args.shape)} in {time.perf_counter() - start:.1f} s")
        augment = dict(flip_prob=0.5, rotate_deg=10.0, scale_range=0.1, gamma_range=0.2, noise_std=0.02)
        rows = []
        for dims in args.dims:
            x, y, z = args.shape
            patch = (64, 64, 64) if dims == 3 else (96, 112)
            patch = tuple(min(p, s) // 16 * 16 for p, s in zip(patch, (x, y, z) if dims == 3 else (x, y)))
            for workers in args.workers:
                cache_dir = work / f"cache-{dims}d-{workers}w"
                for state in ("cold", "warm"):
                    data = DataConfig(source="phantom", root=str(data_dir), cache_dir=str(cache_dir), patch_size=patch,
                                      workers=workers, patches_per_volume=16, **(augment if args.augment else {}))
                    cfg = Config(data=data, model=ModelConfig(dims=dims, depth=2, channel_mults=(1, 2, 4)))
                    result = measure(cfg, args.batches, args.batch_size)
                    rows.append((dims, patch, workers, state, result))
        unit = {2: "slices/s", 3: "patches/s"}
        print(f"\nbatch {args.batch_size}, {args.batches} batches, augment={'on' if args.augment else 'off (flips only)'}")
        print(f"{'dims':>4} {'patch':>14} {'workers':>7} {'cache':>5} {'setup s':>8} {'1st batch s':>11} {'throughput':>18}")
        for dims, patch, workers, state, r in rows:
            print(f"{dims:>4} {str(patch):>14} {workers:>7} {state:>5} {r['setup_s']:>8.2f} {r['first_batch_s']:>11.2f} "
                  f"{r['samples_per_s']:>8.0f} {unit[dims]:<9}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
