"""Training-loader throughput on phantom volumes: 2D slices/s and 3D patches/s.

For each (dims, workers, cache state) it builds a loader and reads batches:
- cold: an empty cache folder, so loader setup includes reading the .nii.gz files,
  reorientation, masking, normalization and writing the cache;
- warm: the cache from the cold run, so setup only memory-maps the arrays.
Reported: setup seconds, first-batch seconds (includes starting worker processes) and the
steady-state samples/s over the remaining batches.

    python benchmarks/loader_throughput.py                     # 4 subjects of 96x112x80
    python benchmarks/loader_throughput.py --subjects 2 --shape 48 56 40 --batches 10   # quick
    python benchmarks/loader_throughput.py --host-batch   # host ms per 32x256^2 batch (GPU anchor)

``--host-batch`` prints the host time to build one batch of the 2D GPU anchor (32 slices of
256x256 from two cached 256x256x128 phantom volumes, every slice, workers 0) with flips only,
with the augmentation of ``configs/ixi_2d.yaml`` (flips + rotation + scaling + bias field,
contrast, gamma), and with that augmentation on the config's 2.5D input (five T1 slices as
channels): at a 25 ms GPU step one worker keeps up only below 25 ms.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mrsynth.config import Config, DataConfig, ModelConfig, load_config
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


AUGMENTATION_KEYS = ("flip_prob", "rotate_deg", "scale_range", "gamma_range", "noise_std", "bias_field",
                     "contrast_range")
ANCHOR_BATCH, ANCHOR_SLICE = 32, (256, 256)


def host_batch_ms(data_dir: Path, cache_dir: Path, augmentation: dict[str, float], batches: int) -> float:
    """Mean host ms per anchor batch, read back to back after one warm-up batch (workers 0)."""
    data = DataConfig(source="phantom", root=str(data_dir), cache_dir=str(cache_dir), patch_size=ANCHOR_SLICE,
                      slice_axis=2, min_foreground=0.0, workers=0, prefetch=1, **augmentation)
    cfg = Config(data=data, model=ModelConfig(dims=2, depth=2, channel_mults=(1, 2, 4)))
    with make_train_loader(discover_pairs(cfg.data), cfg, batch_size=ANCHOR_BATCH, seed=0) as loader:
        next(loader)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        return (time.perf_counter() - start) / batches * 1e3


def host_batch_report(work: Path, batches: int, repeats: int) -> None:
    """Host ms per 32x256^2 batch: flips only, configs/ixi_2d.yaml's augmentation, and that on its 2.5D input."""
    data_dir = work / "phantom-256"
    write_phantom_dataset(data_dir, 2, shape=(*ANCHOR_SLICE, 128), seed=0)
    ixi = load_config(Path(__file__).resolve().parents[1] / "configs" / "ixi_2d.yaml").data
    ixi_augmentation = {k: getattr(ixi, k) for k in AUGMENTATION_KEYS}
    settings = {"flips": {"flip_prob": 0.5, "rotate_deg": 0.0, "scale_range": 0.0},
                "ixi_2d.yaml": ixi_augmentation,
                "+ 2.5D": {**ixi_augmentation, "context_slices": ixi.context_slices}}  # the config's whole input
    print(f"host ms per batch of {ANCHOR_BATCH} x {ANCHOR_SLICE[0]}x{ANCHOR_SLICE[1]} (workers 0, "
          f"{batches} batches, median of {repeats})")
    for name, augmentation in settings.items():
        runs = [host_batch_ms(data_dir, work / "cache-256", augmentation, batches) for _ in range(repeats)]
        active = ", ".join(f"{k}={v:g}" for k, v in augmentation.items() if v)
        print(f"  {name:<12} {float(np.median(runs)):7.1f} ms  (runs: {', '.join(f'{r:.1f}' for r in runs)}; {active})")


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
    parser.add_argument("--host-batch", action="store_true",
                        help="only the host ms per 32x256^2 batch: flips, configs/ixi_2d.yaml's augmentation, "
                             "and that on its 2.5D input")
    parser.add_argument("--repeats", type=int, default=3, help="--host-batch: measurements per setting")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mrsynth-loader-bench-"))
    data_dir = args.data_dir or work / "phantom"
    try:
        if args.host_batch:
            host_batch_report(work, args.batches, args.repeats)
            return
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
