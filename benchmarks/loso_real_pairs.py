"""Leave-one-subject-out over the real T1/T2 pairs: each subject held out once, every backend and
variant trained on the others, scored with the baselines by the same `evaluate`.

Subjects: the two patients of ../shared/data/patients_sri24 (AURORA, TCGA-DU-7294) and the MNI
2009c template pair of ../shared/data/mni2009c_2mm, resampled to 1 mm (cubic) and skull-stripped
with its brain mask so that all three are brain-only (`data.mask: nonzero`). The MNI pair is an
average of 152 brains: smoother than any single scan, which the report's sharpness column shows.

    python benchmarks/loso_real_pairs.py --out runs/loso [--backends jax torch] \
        [--variant plain --variant "ctx2:data.context_slices=2"] [--set train.steps=600] \
        [--held-out TCGA-DU-7294]   # some folds only
        [--shared-init]             # both backends start from the same weights

Writes, under --out: subjects/ (the prepared pairs), <variant>/<held-out>/ (the runs and the
fold's evaluate report), and loso.md + loso.json: per fold and method psnr/ssim in normalized
T2 units, the scale-invariant psnr_z/ssim_z, sharpness, and each run's margin over the best
baseline in psnr_z. A fold that fails with a one-line error (a normalization that refuses a
subject, say) is listed with its error and the others still run; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_to_output

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrsynth.commands.compare import train_all  # noqa: E402
from mrsynth.config import load_config  # noqa: E402
from mrsynth.data.io import read_nifti  # noqa: E402
from mrsynth.errors import MrsynthError  # noqa: E402
from mrsynth.evaluation.metrics import slice_psnr_z  # noqa: E402
from mrsynth.evaluation.runner import evaluate_runs, load_run, safe_name  # noqa: E402
from mrsynth.evaluation.stats import paired_test  # noqa: E402
from mrsynth.fileio import atomic_write_text, make_folder  # noqa: E402
from mrsynth.reporting import json_text, markdown_table  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PATIENTS = ("AURORA", "TCGA-DU-7294")
MNI_SUBJECT = "MNI2009c"
COLUMNS = ("psnr", "ssim", "psnr_z", "ssim_z", "mae_z", "sharpness")


def _write(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.float32), affine), str(path))


def prepare_subjects(out: Path, shared: Path = SHARED) -> Path:
    """A glob-readable folder ``<subject>/t1.nii.gz, t2.nii.gz`` of the three brain-only pairs."""
    root = out / "subjects"
    for subject in PATIENTS:
        folder = root / subject
        make_folder(folder, "--out")
        for role in ("t1", "t2"):
            link = folder / f"{role}.nii.gz"
            if not link.exists():
                link.symlink_to((shared / "patients_sri24" / subject / f"{role}.nii.gz").resolve())
    folder = root / MNI_SUBJECT
    make_folder(folder, "--out")
    if not (folder / "t2.nii.gz").exists():
        mni = shared / "mni2009c_2mm"
        mask = resample_to_output(nib.load(str(mni / "mni2009c_2mm_brain_mask.nii.gz")), (1.0, 1.0, 1.0), order=1)
        inside = np.asarray(mask.dataobj) > 0.5
        for role, name in (("t1", "T1w"), ("t2", "T2w")):
            image = resample_to_output(nib.load(str(mni / f"mni2009c_2mm_{name}.nii.gz")), (1.0, 1.0, 1.0), order=3)
            data = np.clip(np.asarray(image.dataobj, dtype=np.float32), 0.0, None)
            _write(np.where(inside, data, 0.0), image.affine, folder / f"{role}.nii.gz")
    return root


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name`` or ``name:key=value,key=value`` -> (name, ["key=value", ...])."""
    name, _, rest = text.partition(":")
    return name, [item for item in rest.split(",") if item]


def backend_slices(report_dir: Path, subject_dir: Path, labels: list[str]) -> dict[str, list[float]]:
    """Per-axial-slice psnr_z of each run's written prediction against the real T2 as acquired,
    inside the T1's non-zero mask (``data.mask: nonzero``), as :func:`slice_psnr_z` scores it."""
    t1, _ = read_nifti(subject_dir / "t1.nii.gz", what="T1")
    t2, _ = read_nifti(subject_dir / "t2.nii.gz", what="T2")
    mask = t1 > 0
    out = {}
    for label in labels:
        pred, _ = read_nifti(report_dir / "nifti" / f"{safe_name(subject_dir.name)}_{safe_name(label)}_T2.nii.gz",
                             what="prediction")
        out[label] = slice_psnr_z(pred, t2, mask)
    return out


def shared_init(config: Path, overrides: list[str], path: Path) -> str:
    """The variant's generator as JAX initializes it from ``train.seed``, written as a portable
    file that every backend's run starts from (``train.init_weights``): the backends then differ
    by their arithmetic, not by their initializers. Returns the override."""
    from jax_impl.model import build_model
    from jax_impl.weights import save_weights

    cfg = load_config(config, overrides)
    make_folder(path.parent, "--out")
    save_weights(path, build_model(cfg.model, seed=cfg.train.seed), cfg.model)
    return f"train.init_weights={path}"


def run_fold(config: Path, root: Path, held_out: str, subjects: list[str], overrides: list[str],
             backends: list[str], out: Path) -> tuple[list[dict], dict[str, list[float]]]:
    """Train on every subject but ``held_out``, evaluate on it; one row per method, and each
    run's per-slice psnr_z by label (for the paired backend test)."""
    train_subjects = [s for s in subjects if s != held_out]
    fold = [f"data.root={root}", f"data.train_subjects=[{','.join(train_subjects)}]",
            f"data.test_subjects=[{held_out}]", "data.val_subjects=[]", f"run.root={out / 'runs'}"]
    run_dirs = train_all(config, fold + overrides, backends)
    runs = [load_run(d) for d in run_dirs]
    result, report = evaluate_runs(runs, "test", out / "report", title=f"LOSO fold: {held_out} held out")
    rows = []
    for method in result.methods:
        row = {"held_out": held_out, "method": method, "kind": result.kinds[method], "report": str(report)}
        row.update({k: result.values(method, k)[0] for k in COLUMNS})
        rows.append(row)
    best_z = max(r["psnr_z"] for r in rows if r["kind"] == "baseline")
    for row in rows:
        row["margin_psnr_z"] = row["psnr_z"] - best_z
    labels = [m for m in result.methods if result.kinds[m] == "run"]
    return rows, backend_slices(report.parent, root / held_out, labels)


def backend_tests(slices: dict[str, dict[str, list[float]]]) -> list[dict]:
    """JAX minus PyTorch psnr_z over the same slices: per fold, then over all folds pooled.

    Neighbouring slices are correlated, so these p-values overstate the evidence of a
    difference: "not significantly different" passes a harder test than the true one."""
    rows, pooled = [], {"jax": [], "torch": []}
    for fold, by_label in slices.items():
        if "jax" in by_label and "torch" in by_label:
            rows.append({"fold": fold, **paired_test(by_label["jax"], by_label["torch"])})
            for label in pooled:
                pooled[label] += by_label[label]
    if len(rows) > 1:
        rows.append({"fold": "all folds", **paired_test(pooled["jax"], pooled["torch"])})
    return rows


def tests_markdown(tests: list[dict]) -> str:
    if not tests:
        return ""
    table = markdown_table(["variant", "held out", "slices", "JAX - PyTorch psnr_z (dB)", "p (paired t)", "p (Wilcoxon)", "note"],
                           [[t["variant"], t["fold"], str(t["n"]), f"{t['mean_diff']:+.3f}", f"{t['p_t']:.3g}", f"{t['p_w']:.3g}",
                             t["note"]] for t in tests])
    return ("\n## JAX vs PyTorch, paired over axial slices\n\nEach slice's psnr_z (volumes z-scored inside "
            "the mask, the volume's range) for both backends' predictions of the held-out subject. "
            "Neighbouring slices are correlated, so the p-values overstate a difference.\n\n" + table + "\n")


def markdown(rows: list[dict], variants: dict[str, list[str]], steps_note: str, failed: list[dict]) -> str:
    head = ["variant", "held out", "method", *COLUMNS, "psnr_z - best baseline"]
    table = markdown_table(head, [[r["variant"], r["held_out"], r["method"], *(f"{r[k]:.3f}" for k in COLUMNS),
                                   f"{r['margin_psnr_z']:+.2f}" if r["kind"] == "run" else ""] for r in rows]
                           ) if rows else "No fold could be run."
    described = "; ".join(f"`{n}` " + (", ".join(o) or "(config as is)") for n, o in variants.items())
    text = f"# Leave-one-subject-out on the real pairs\n\nVariants: {described}. {steps_note}\n\n{table}\n"
    if failed:
        text += ("\n## Folds that could not be run\n\n"
                 + markdown_table(["variant", "held out", "error"],
                                  [[f["variant"], f["held_out"], f["error"]] for f in failed]) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "patients_2d.yaml")
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override for every variant (e.g. train.steps=600)")
    parser.add_argument("--subjects", nargs="+", default=[*PATIENTS, MNI_SUBJECT])
    parser.add_argument("--held-out", nargs="+", metavar="SUBJECT",
                        help="the folds to run, by held-out subject (default: every subject)")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--shared-init", action="store_true",
                        help="every backend's run starts from the same weights (JAX's initialization, "
                             "written per variant to <out>/<variant>/init.safetensors)")
    args = parser.parse_args(argv)
    root = prepare_subjects(args.out, args.shared)
    variants = dict(parse_variant(v) for v in (args.variant or ["plain"]))
    rows, tests, failed = [], [], []
    for name, overrides in variants.items():
        if args.shared_init:
            overrides = [*overrides, shared_init(args.config, args.overrides + overrides,
                                                 args.out / name / "init.safetensors")]
            variants[name] = overrides
        slices = {}
        for held_out in args.held_out or args.subjects:
            try:
                fold_rows, slices[held_out] = run_fold(args.config, root, held_out, args.subjects,
                                                       args.overrides + overrides, args.backends,
                                                       args.out / name / held_out)
            except MrsynthError as err:  # e.g. a normalization that refuses a subject: the others still run
                print(f"error: {name} / {held_out}: {err}", file=sys.stderr)
                failed.append({"variant": name, "held_out": held_out, "error": str(err)})
                continue
            rows += [{"variant": name, **r} for r in fold_rows]
        tests += [{"variant": name, **t} for t in backend_tests(slices)]
    steps = load_config(args.config, args.overrides).train.steps
    note = f"{steps} training steps per run, config {args.config.name}, overrides {args.overrides or 'none'}."
    text = markdown(rows, variants, note, failed) + tests_markdown(tests)
    atomic_write_text(args.out / "loso.json", json_text({"rows": rows, "backend_tests": tests, "failed": failed}))
    atomic_write_text(args.out / "loso.md", text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
