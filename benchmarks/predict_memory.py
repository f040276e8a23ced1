"""Does a long `predict` job hold its memory flat? Peak RSS and the RSS slope per volume, per backend.

For each backend: a tiny untrained-quality run (a few steps on the phantom, trained in a
subprocess so its memory does not count), then, in a fresh process, `run.py predict` in-process
over N phantom volumes (one folder job, masks paired by subject id), the resident set size read
from /proc/self/status after every volume. A leak shows as a positive slope (MiB per volume,
least squares over the second half of the job: the first volumes carry compilation and the
allocators' one-time growth).

    python benchmarks/predict_memory.py [--backend jax torch] [--volumes 24] [--shape 96 112 80]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def train_tiny(backend: str, work: Path, shape: list[int]) -> Path:
    """A few training steps on a 4-subject phantom: weights of the right architecture, fast."""
    sets = [f"data.root={work / 'phantom'}", f"data.cache_dir={work / 'cache'}", "data.phantom_subjects=4",
            f"data.phantom_shape={shape}", f"data.patch_size={shape[:2]}", "data.split_fractions=[0.5,0.25,0.25]",
            "model.depth=2", "model.base_channels=8", "model.channel_mults=[1,2,4]", "model.groups=2",
            "train.steps=4", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=2",
            "train.val_every=4", "train.ckpt_every=4", "train.val_subjects_max=1", f"run.root={work / 'runs'}"]
    run = work / f"run-{backend}"
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "train", "--backend", backend, "--run-dir", str(run),
                           *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training the tiny {backend} run failed:\n{done.stderr[-2000:]}")
    return run


def make_inputs(phantom: Path, work: Path, volumes: int) -> tuple[Path, Path]:
    """``volumes`` T1 files (the phantom's heads under new subject names) and their masks."""
    t1s = sorted(phantom.glob("*-T1.nii.gz"))
    inputs, masks = work / "in", work / "masks"
    inputs.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    for index in range(volumes):
        source = t1s[index % len(t1s)]
        shutil.copy(source, inputs / f"B{index:03d}-T1.nii.gz")
        shutil.copy(str(source).replace("-T1.nii.gz", "-mask.nii.gz"), masks / f"B{index:03d}-mask.nii.gz")
    return inputs, masks


def measure(run: Path, inputs: Path, masks: Path, out: Path) -> dict[str, float]:
    """Run one predict job in this process, sampling RSS after each volume."""
    import mrsynth.inference.synthesis as synthesis
    from mrsynth.cli import main

    samples: list[float] = []
    synthesize_file = synthesis.synthesize_file

    def sampled(*args, **kwargs):
        result = synthesize_file(*args, **kwargs)
        samples.append(rss_mib())
        return result

    synthesis.synthesize_file = sampled
    code = main(["predict", "--checkpoint", str(run), "--input", str(inputs), "--out", str(out), "--mask", str(masks)])
    if code != 0:
        raise SystemExit(f"predict exited {code}")
    steady = np.asarray(samples[len(samples) // 2:])
    slope = float(np.polyfit(np.arange(len(steady)), steady, 1)[0]) if len(steady) > 1 else float("nan")
    return {"volumes": len(samples), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "first_mib": samples[0], "last_mib": samples[-1], "slope_mib_per_volume": slope,
            "rss_mib": [round(v) for v in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", nargs="+", choices=("jax", "torch"), default=["jax", "torch"])
    parser.add_argument("--volumes", type=int, default=24)
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 112, 80], metavar=("X", "Y", "Z"))
    parser.add_argument("--child", nargs=4, metavar=("RUN", "INPUTS", "MASKS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*map(Path, args.child))))
        return
    print("| backend | volumes | peak RSS MiB | RSS after volume 1 / last MiB | slope MiB/volume | RSS after each volume |\n"
          "|---|---|---|---|---|---|")
    for backend in args.backend:
        with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
            work = Path(tmp)
            run = train_tiny(backend, work, args.shape)
            inputs, masks = make_inputs(work / "phantom", work, args.volumes)
            child = subprocess.run([sys.executable, __file__, "--child", str(run), str(inputs), str(masks),
                                    str(work / "out")], check=True, capture_output=True, text=True)
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"| {backend} | {r['volumes']} | {r['peak_rss_mib']:.0f} | {r['first_mib']:.0f} / "
                  f"{r['last_mib']:.0f} | {r['slope_mib_per_volume']:+.2f} | {' '.join(map(str, r['rss_mib']))} |", flush=True)


if __name__ == "__main__":
    main()
