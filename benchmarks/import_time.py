"""Import time of what every mrsynth process loads, each in fresh processes (median of --repeats).

Every `train`, `predict`, `evaluate`, cross-validation point and test subprocess pays these
seconds before it does anything; ml_dtypes is timed after numpy, so its row is its own cost.

    python benchmarks/import_time.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from importlib import metadata

# (what is timed, what is imported before the clock starts)
TARGETS = [
    ("numpy", ""),
    ("ml_dtypes", "numpy"),
    ("jax", ""),
    ("mrsynth.training.loop, jax_impl.train", ""),
    ("torch_ref.train", ""),
]


def seconds(modules: str, before: str) -> float:
    """One fresh interpreter's import time of ``modules`` after ``before``."""
    code = (f"import time\n{'import ' + before if before else ''}\n"
            f"t = time.perf_counter()\nimport {modules}\nprint(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    versions = {name: metadata.version(name) for name in ("numpy", "ml_dtypes", "jax", "torch")}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"| import | after | median s ({args.repeats} processes) | min s | max s |")
    print("|---|---|---|---|---|")
    for modules, before in TARGETS:
        times = [seconds(modules, before) for _ in range(args.repeats)]
        print(f"| {modules} | {before or '-'} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} |")


if __name__ == "__main__":
    main()
