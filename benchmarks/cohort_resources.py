"""Does a cohort fit the machine? Preprocessing, cache size, throughput and peak memory of `train`.

Runs `run.py train --config CONFIG` in a subprocess with a fresh preprocessing cache under
``--out`` (so the first epoch pays for preprocessing every volume, as on a user's first run),
samples the resident memory of the whole process tree (the trainer and its grain workers) every
0.2 s, and reports:

- the time to the first logged step (reading, masking, normalizing and caching every volume,
  plus the first compilation), and the cache's size on disk;
- images per second of each logged window of steps (the first window includes compilation);
- the peak summed RSS of the process tree (shared pages counted once per process: an upper bound).

    python benchmarks/cohort_resources.py --config configs/brats_2d.yaml --steps 100 --out OUT

Writes ``OUT/resources.json`` and prints a Markdown table. A benchmark that prints numbers, not a
test: run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mrsynth.bench.machine import host_info  # noqa: E402


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant alive now (from /proc/<pid>/task/<tid>/children)."""
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                queue += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return pids


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def markdown_table(result: dict, steps: int) -> str:
    """The printed table of a ``resources.json`` (three significant digits of throughput: a 3D
    config trains at well under one image a second on 2 cores)."""
    rates = [w["images_per_s"] for w in result["images_per_s"]]
    steady = rates[1:]
    rows = [("preprocessed cache on disk", f"{result['cache_bytes'] / 2**30:.2f} GiB ({result['cache_volumes']} entries)"),
            (f"start to the first logged step (step {result['images_per_s'][0]['step']}: preprocessing, "
             "compilation and the steps)", f"{result['first_logged_step_s']:.0f} s"),
            ("first window", f"{rates[0]:.3g} images/s")]
    if steady:
        rows.append(("later windows", f"{min(steady):.3g}-{max(steady):.3g} images/s "
                                      f"(median {sorted(steady)[len(steady) // 2]:.3g})"))
    rows += [("peak RSS of the process tree",
              f"{result['peak_rss_bytes'] / 2**30:.2f} GiB ({result['processes_at_peak']} processes)"),
             ("wall time", f"{result['wall_s']:.0f} s for {steps} steps")]
    return "\n".join(["| quantity | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the training config (a cohort)")
    parser.add_argument("--steps", type=int, default=100, help="training steps to time (default 100)")
    parser.add_argument("--backend", default="jax", choices=("jax", "torch"), help="backend (default jax)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the run, the cache and resources.json")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a preprocessing cache to reuse (default: a fresh one in --out, so preprocessing is timed)")
    args = parser.parse_args()
    out = args.out.absolute()
    cache, run_dir = (args.cache or out / "cache").absolute(), out / "run"
    command = [sys.executable, str(ROOT / "run.py"), "train", "--config", args.config, "--backend", args.backend,
               "--run-dir", str(run_dir), "--no-progress", "--set", f"data.cache_dir={cache}",
               "--set", f"train.steps={args.steps}", "--set", f"train.ckpt_every={args.steps}",
               "--set", f"train.val_every={10 * args.steps}"]
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, peak_processes = 0, 0
    while child.poll() is None:
        pids = tree_pids(child.pid)
        total = sum(rss_bytes(p) for p in pids)
        if total > peak:
            peak, peak_processes = total, len(pids)
        time.sleep(0.2)
    wall = time.time() - started
    if child.returncode != 0:
        print(child.stderr.read()[-3000:], file=sys.stderr)
        return child.returncode
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if r.get("kind") == "train"]
    result = {
        "command": " ".join(command), "machine": host_info(), "wall_s": wall,
        "first_logged_step_s": windows[0]["time"] - started, "cache_bytes": folder_bytes(cache),
        "cache_volumes": len([p for p in cache.iterdir() if p.is_dir()]),
        "images_per_s": [{"step": r["step"], "images_per_s": r["images_per_s"]} for r in windows],
        "peak_rss_bytes": peak, "processes_at_peak": peak_processes,
    }
    (out / "resources.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
