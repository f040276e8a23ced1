"""Seconds to score one subject's predictions as ``evaluate`` does (every metric of
``volume_metrics`` and ``literature_slice_metrics``), with one ``TargetCache`` for the subject
against a fresh one per prediction, and a check that both give the same values.

    python benchmarks/metric_time.py [--t1 T1 --t2 T2] [--methods 4] [--repeats 3]

The subject defaults to ``../shared/data/patients_sri24/AURORA`` (240 x 240 x 155, skull-stripped).
The predictions stand in for evaluate's methods (a run and the baselines): the target with
noise, gain and offset.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrsynth.evaluation.metrics import TargetCache, literature_slice_metrics, volume_metrics  # noqa: E402


PATIENT = Path(__file__).resolve().parents[2] / "shared" / "data" / "patients_sri24" / "AURORA"


def subject(t1: Path, t2: Path) -> tuple[np.ndarray, np.ndarray]:
    """(T2 z-scored in the brain, brain mask = the T1's non-zero voxels)."""
    from mrsynth.data.io import read_nifti

    mask = read_nifti(t1)[0] > 0
    target = read_nifti(t2)[0].astype(np.float64)
    target = np.where(mask, (target - target[mask].mean()) / target[mask].std(), 0.0)
    return target.astype(np.float32), mask


def score_all(predictions: list[np.ndarray], target: np.ndarray, mask: np.ndarray, shared: bool) -> list[dict]:
    """Every metric of each prediction; ``shared``: through one TargetCache, else each alone."""
    cache = TargetCache() if shared else None
    return [{**volume_metrics(p, target, mask, None, None, cache),
             **literature_slice_metrics(p, target, mask, cache=cache)} for p in predictions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t1", type=Path, default=PATIENT / "t1.nii.gz", help="a T1 whose non-zero voxels are the mask")
    parser.add_argument("--t2", type=Path, default=PATIENT / "t2.nii.gz", help="the real T2 on the same grid")
    parser.add_argument("--methods", type=int, default=4, help="predictions per subject (evaluate: runs + 3 baselines)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per variant; the median is printed")
    args = parser.parse_args()
    target, mask = subject(args.t1, args.t2)
    rng = np.random.default_rng(0)
    predictions = [np.where(mask, (0.5 + 0.2 * i) * target + 0.1 * i + rng.normal(0, 0.3, target.shape), 0)
                   .astype(np.float32) for i in range(args.methods)]
    print(f"subject {target.shape}, {int(mask.sum())} mask voxels, {args.methods} predictions")
    results = {}
    for shared in (False, True):
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            results[shared] = score_all(predictions, target, mask, shared)
            seconds.append(time.perf_counter() - start)
        label = "one TargetCache for the subject" if shared else "a fresh TargetCache per prediction"
        print(f"{label:36s} median {np.median(seconds):6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in seconds)})")
    print("same values:", results[True] == results[False])


if __name__ == "__main__":
    main()
