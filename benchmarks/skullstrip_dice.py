"""Dice and time per volume of mrsynth.data.skullstrip.extract_brain (the --skull-strip method).

Phantom subjects (own brain masks), the MNI ICBM152 2009c 2 mm T1w (with skull) against its brain
mask, and already skull-stripped SRI24 patients against their non-zero region (a do-no-harm
check). Prints a Markdown table. Needs `pip install '.[skullstrip]'` and ../shared/data.

    python benchmarks/skullstrip_dice.py [--phantom-dir DIR] [--shared DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mrsynth.data.io import read_nifti
from mrsynth.phantom.dataset import write_phantom_dataset
from mrsynth.data.skullstrip import dice, extract_brain

ROOT = Path(__file__).resolve().parents[1]


def _cases(phantom_dir: Path, shared: Path):
    for t1_path in sorted(phantom_dir.glob("*-T1.nii.gz")):
        t1, geo = read_nifti(t1_path)
        ref, _ = read_nifti(str(t1_path).replace("-T1.", "-mask."))
        yield t1_path.name.replace("-T1.nii.gz", ""), "given mask", t1, geo, ref > 0.5
    mni = shared / "data" / "mni2009c_2mm"
    if mni.is_dir():
        t1, geo = read_nifti(mni / "mni2009c_2mm_T1w.nii.gz")
        ref, _ = read_nifti(mni / "mni2009c_2mm_brain_mask.nii.gz")
        yield "MNI152 2009c (2 mm, with skull)", "brain_mask", t1, geo, ref > 0.5
    for patient in ("AURORA", "TCGA-DU-7294"):
        path = shared / "data" / "patients_sri24" / patient / "t1.nii.gz"
        if path.is_file():
            t1, geo = read_nifti(path)
            yield f"{patient} (1 mm, stripped)", "non-zero", t1, geo, t1 != 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom-dir", type=Path, help="existing demo-data dir (else 4 generated)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        phantom_dir = args.phantom_dir
        if phantom_dir is None:
            phantom_dir = Path(tmp)
            write_phantom_dataset(phantom_dir, 4)
        rows = []
        for name, ref_name, t1, geo, ref in _cases(phantom_dir, args.shared):
            start = time.perf_counter()
            mask = extract_brain(t1, geo.voxel_size)
            seconds = time.perf_counter() - start
            vs = "x".join(f"{v:g}" for v in geo.voxel_size)
            shape = "x".join(str(n) for n in t1.shape)
            ratio = mask.sum() / max(int(ref.sum()), 1)
            rows.append(f"| {name} | {shape} @ {vs} mm | {ref_name} | {dice(mask, ref):.3f} | "
                        f"{ratio:.2f} | {seconds:.1f} |")
            print(f"  done {name}", flush=True)
    print("\n| volume | grid | reference | Dice | volume / reference | seconds |")
    print("|---|---|---|---:|---:|---:|")
    print("\n".join(rows))
    print("\nThe first volume's time includes numba's JIT compile (cached on disk after the first run).")


if __name__ == "__main__":
    main()
