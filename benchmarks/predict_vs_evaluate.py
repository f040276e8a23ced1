"""Does `predict` deliver what `evaluate` reports? Both on the same held-out subjects of a run.

For every subject of the chosen split: `run.py predict` on its raw T1 (with the given predict
options), the output scored against the real T2 inside the subject's brain mask
(:func:`mrsynth.evaluation.score_files.score_prediction`), next to `run.py evaluate`'s figure for
the same subject. Prints a Markdown table.

    python benchmarks/predict_vs_evaluate.py --run RUN_DIR [--split test] [--code DIR] [--evaluated CSV] \
        [-- --mask-from-data | --skull-strip | --mask nonzero | --tta flip ...]

``--mask-from-data`` passes each subject's own mask file to predict. ``--code`` runs another
checkout's run.py (e.g. the code before a change); scoring always uses this checkout.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrsynth.config import load_config  # noqa: E402
from mrsynth.subjects import subject_splits  # noqa: E402
from mrsynth.data.io import read_nifti, save_nifti  # noqa: E402
from mrsynth.data.preprocess import NormStats, nonzero_foreground  # noqa: E402
from mrsynth.evaluation.score_files import score_prediction  # noqa: E402


def t2_reference(run: Path) -> NormStats:
    for name in ("preprocessing.json", "normalization.json"):  # the latter: runs of mrsynth < 0.2
        if (run / name).is_file():
            return NormStats.from_json(json.loads((run / name).read_text())["t2_reference"])
    raise SystemExit(f"error: {run}: no preprocessing.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose run.py runs predict/evaluate")
    parser.add_argument("--mask-from-data", action="store_true", help="predict --mask <the subject's mask file>")
    parser.add_argument("--skip-evaluate", action="store_true")
    parser.add_argument("--evaluated", type=Path, default=None,
                        help="an evaluate per_subject.csv of this run and split to compare with, instead of running evaluate")
    args, predict_extra = parser.parse_known_args()
    predict_extra = [a for a in predict_extra if a != "--"]
    cfg = load_config(args.run / "config.yaml")
    subjects = subject_splits(cfg.data)[args.split]
    ref = t2_reference(args.run)
    work = Path(tempfile.mkdtemp(prefix="pve-"))
    run_py = [sys.executable, str(args.code / "run.py")]

    evaluate_rows: dict[str, dict[str, str]] = {}
    if args.evaluated is not None:
        with open(args.evaluated) as handle:
            label = json.loads((args.run / "run.json").read_text())["backend"]
            evaluate_rows = {r["subject"]: r for r in csv.DictReader(handle) if r["method"] == label}
    elif not args.skip_evaluate:
        extra = [a for a in predict_extra if a in ("--tta", "flip")]
        subprocess.run([*run_py, "evaluate", "--checkpoint", str(args.run), "--subjects", args.split,
                        "--out", str(work / "eval"), *extra], check=True, stdout=subprocess.DEVNULL)
        with open(work / "eval" / "per_subject.csv") as handle:
            label = json.loads((args.run / "run.json").read_text())["backend"]
            evaluate_rows = {r["subject"]: r for r in csv.DictReader(handle) if r["method"] == label}

    print(f"run {args.run}, split {args.split}, predict options: {' '.join(predict_extra) or '(none)'}"
          f"{' --mask <subject mask>' if args.mask_from_data else ''}")
    print("| subject | evaluate PSNR dB | evaluate r | evaluate psnr_z dB | predict PSNR dB | predict r | "
          "predict psnr_z dB | brain covered | predict PSNR dB where synthesized | predict min..max | real T2 max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for files in subjects:
        out = work / "pred" / files.subject
        mask_args = ["--mask", str(files.mask)] if args.mask_from_data and files.mask else []
        subprocess.run([*run_py, "predict", "--checkpoint", str(args.run), "--input", str(files.t1),
                        "--output", str(out), *mask_args, *predict_extra], check=True, stdout=subprocess.DEVNULL)
        pred = next(p for p in out.glob("*_synthT2.nii*"))
        synthesized_in = next(out.glob("*_synthT2_mask.nii*"), None)  # None: a --code from before it was written
        score_mask = files.mask
        if score_mask is None:  # skull-stripped data: the brain is the T1's non-zero region
            t1, geometry = read_nifti(files.t1)
            score_mask = work / f"{files.subject}-brain.nii.gz"
            save_nifti(nonzero_foreground(t1).astype(np.uint8), geometry.ras_affine, score_mask)
        s = score_prediction(pred, files.t2, score_mask, ref, cfg.data, cfg.eval.data_range)
        within = score_prediction(pred, files.t2, score_mask, ref, cfg.data, cfg.eval.data_range,
                                  synthesized_in=synthesized_in)
        covered = f"{100 * within['brain_coverage']:.1f}%" if "brain_coverage" in within else "-"
        t2_max = float(read_nifti(files.t2)[0].max())
        e = evaluate_rows.get(files.subject, {})
        ev_psnr = f"{float(e['psnr']):.2f}" if e else "-"
        ev_r = f"{float(e['pearson']):.3f}" if e else "-"
        ev_z = f"{float(e['psnr_z']):.2f}" if e and e.get("psnr_z") else "-"
        print(f"| {files.subject} | {ev_psnr} | {ev_r} | {ev_z} | {s['psnr']:.2f} | {s['pearson']:.3f} | {s['psnr_z']:.2f} | "
              f"{covered} | {within['psnr']:.2f} | "
              f"{s['min_output']:.0f}..{s['max_output']:.0f} | {t2_max:.0f} |")


if __name__ == "__main__":
    main()
