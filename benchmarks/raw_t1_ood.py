"""A cohort model on T1s it was not trained like: the raw clinical exam and the 3 mm slices.

For each case, `run.py predict --checkpoint RUN --input T1 --out ...` with no flag (the model
makes its own mask and runs at its own voxel size), then the output is scored against the real T2
on the T1's own grid, inside the mask predict used (the `_synthT2_mask` file it writes) and the T2's field of
view, next to the baselines that `evaluate` prints (fitted on the run's training subjects,
clipped to the same range), all in the same voxels and units: the real T2 z-scored in the mask as
`evaluate` normalizes it, the prediction mapped back through the run's T2 reference.

- ``raw_exam_upenn``: the raw 3D T1 (skull, 0.98 x 0.98 x 1 mm, LPS) and the same session's
  axial T2 TSE (3 mm slices), rigidly registered onto the T1 (Mattes MI, mrsynth.ixi.registration,
  as prepare-ixi does);
- ``cbica_3mm``: T1/T2 on one grid, 0.94 x 0.94 x 3 mm, skull-stripped, 8-bit.

    python benchmarks/raw_t1_ood.py --run RUN --out docs/results/<folder> [--shared ../shared/data]

Writes ``ood.json`` (every number), ``ood.md`` (the tables), ``predict_lines.txt`` (what predict
printed) and one figure per case in ``figures/`` (T1, real T2, synthesized, |error|, three views).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrsynth.config import Config, load_config  # noqa: E402
from mrsynth.data.contract import PreprocessingContract, read_contract  # noqa: E402
from mrsynth.subjects import subject_splits  # noqa: E402
from mrsynth.data.io import read_nifti  # noqa: E402
from mrsynth.data.normalization import fit_normalization  # noqa: E402
from mrsynth.data.preprocess import Volume, resample_to  # noqa: E402
from mrsynth.evaluation import figures  # noqa: E402
from mrsynth.evaluation.metrics import volume_metrics  # noqa: E402
from mrsynth.evaluation.runner import fit_training_baselines  # noqa: E402
from mrsynth.inference.synthesis import output_name  # noqa: E402

METRICS = ("psnr_z", "ssim_z", "psnr", "ssim", "pearson")


def registered_t2(t1_path: Path, t2_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The T2 rigidly registered onto the T1's RAS+ grid (as prepare-ixi registers), its coverage
    there, and the QC numbers."""
    from mrsynth.data.preprocess import otsu_foreground
    from mrsynth.ixi import registration as reg

    t1, t1_geometry = read_nifti(t1_path, what="T1")
    t2, t2_geometry = read_nifti(t2_path, what="T2")
    t1_img, t2_img = reg.to_sitk(t1, t1_geometry.ras_affine), reg.to_sitk(t2, t2_geometry.ras_affine)
    head = otsu_foreground(t1)
    result = reg.rigid_register(t1_img, t2_img, reg.registration_mask(head, t1_geometry.ras_affine), seed=0)
    grid = reg.Grid.from_affine(t1_geometry.ras_affine, t1.shape)
    moved = reg.resample(t2_img, grid, result.transform)
    coverage = reg.resample(reg.to_sitk(np.ones_like(t2), t2_geometry.ras_affine), grid, result.transform) > 0.999
    qc = {"rotation_deg": result.rotation_deg, "translation_mm": result.translation_mm,
          "mattes_before": result.mattes_before, "mattes_after": result.mattes_after,
          "nmi_before": reg.normalized_mutual_information(t1, resample_to(t2, t2_geometry, t1_geometry, 1), head),
          "nmi_after": reg.normalized_mutual_information(t1, moved, head)}
    return moved, coverage, qc


def predict(run: Path, t1: Path, out: Path) -> tuple[Path, Path, list[str]]:
    """The real command, no mask flag; returns the output file, the mask it was synthesized in and
    what predict printed."""
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "predict", "--checkpoint", str(run),
                           "--input", str(t1), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: predict failed on {t1}: {done.stderr.strip()}")
    return out / output_name(t1), out / output_name(t1, "synthT2_mask"), [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def score_case(name: str, run: Path, cfg: Config, contract: PreprocessingContract, t1_path: Path, t2: np.ndarray,
               coverage: np.ndarray, baselines: dict, work: Path, figure_dir: Path) -> tuple[dict, list[str]]:
    """Metrics of the model and the baselines on one case (the T1's RAS+ grid), and a figure."""
    output, synthesized_in, lines = predict(run, t1_path, work)
    pred, geometry = read_nifti(output, what="prediction")
    t1, _ = read_nifti(t1_path, what="T1")
    mask = (read_nifti(synthesized_in, what="predict's mask")[0] > 0) & coverage  # a synthesized 0 counts
    ref = contract.t2_reference
    t1_stats = fit_normalization(t1, mask, cfg.data, t1_path, "t1")
    t2_stats = fit_normalization(t2, mask, cfg.data, name, "t2")
    t1_norm = np.where(mask, t1_stats.normalize(t1), 0.0).astype(np.float32)
    t2_norm = np.where(mask, t2_stats.normalize(t2), 0.0).astype(np.float32)
    volume = Volume(name, t1_norm, t2_norm, mask.astype(np.uint8), None, t1_stats, t2_stats, geometry)
    lo, hi = contract.t2_range
    predictions = {"model": np.where(mask, (pred - ref.offset) / ref.scale, 0.0).astype(np.float32)}
    for key, baseline in baselines.items():
        predictions[key] = np.where(mask, np.clip(baseline.predict(volume), lo, hi), 0.0).astype(np.float32)
    scores = {key: {m: float(v) for m, v in volume_metrics(p, t2_norm, mask, None).items() if m in METRICS}
              for key, p in predictions.items()}
    figures.subject_panel(t1_norm, t2_norm, {"mrsynth (predict)": predictions["model"]}, mask,
                          figure_dir / f"{name}.png", f"{name}: T1, real T2, synthesized T2 (predict, no flags)",
                          voxel_size=geometry.voxel_size)
    scores["brain_ml"] = float(mask.sum() * np.prod(geometry.voxel_size) / 1000.0)
    return scores, lines


def training_baselines(cfg: Config, contract: PreprocessingContract) -> dict:
    """The evaluate baselines, fitted on the run's training subjects as evaluate fits them."""
    data_cfg = contract.with_learned_normalization(cfg.data)
    fitted = fit_training_baselines(subject_splits(cfg.data)["train"], data_cfg)
    return {k: v for k, v in fitted.items() if k != "identity"}


def table(rows: dict[str, dict]) -> list[str]:
    out = ["| case | method | psnr_z dB | ssim_z | psnr dB | ssim | r |", "|---|---|---|---|---|---|---|"]
    for case, scores in rows.items():
        for method in ("model", "linear", "histmatch"):
            s = scores[method]
            out.append(f"| {case} | {method} | {s['psnr_z']:.2f} | {s['ssim_z']:.3f} | {s['psnr']:.2f} | "
                       f"{s['ssim']:.3f} | {s['pearson']:.3f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--cbica", type=int, default=10, help="how many cbica_3mm subjects (default all 10)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    figure_dir = args.out / "figures"
    cfg, contract = load_config(args.run / "config.yaml"), read_contract(args.run)
    baselines = training_baselines(cfg, contract)
    results: dict[str, dict] = {}
    printed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ood-") as tmp:
        exam = args.shared / "raw_exam_upenn"
        t1_path = exam / "pat1_t1_axial_3D.nii.gz"
        t2, coverage, qc = registered_t2(t1_path, exam / "pat1_t2_axial_tse.nii.gz")
        results["raw_exam_upenn"], lines = score_case("raw_exam_upenn", args.run, cfg, contract, t1_path, t2,
                                                      coverage, baselines, Path(tmp) / "exam", figure_dir)
        results["raw_exam_upenn"]["registration"] = qc
        printed += [f"$ predict {t1_path.name}", *lines]
        cbica = args.shared / "cbica_3mm"
        for subject in sorted(p for p in cbica.iterdir() if p.is_dir())[: args.cbica]:
            t1_path = next(subject.glob("*.T1.*.nii.gz"))
            t2_raw, t2_geometry = read_nifti(next(subject.glob("*.T2.*.nii.gz")), what="T2")
            _, t1_geometry = read_nifti(t1_path, what="T1")
            t2 = resample_to(t2_raw, t2_geometry, t1_geometry, order=1)
            results[f"cbica_3mm/{subject.name}"], lines = score_case(
                subject.name, args.run, cfg, contract, t1_path, t2, np.ones(t2.shape, bool), baselines,
                Path(tmp) / subject.name, figure_dir)
            printed += [f"$ predict {t1_path.name}", *lines]
    cbica_rows = {k: v for k, v in results.items() if k.startswith("cbica_3mm/")}
    if cbica_rows:
        results["cbica_3mm (mean)"] = {
            method: {m: float(np.mean([r[method][m] for r in cbica_rows.values()])) for m in METRICS}
            for method in ("model", "linear", "histmatch")}
    (args.out / "ood.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "predict_lines.txt").write_text("\n".join(printed) + "\n")
    lines = table(results)
    (args.out / "ood.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
