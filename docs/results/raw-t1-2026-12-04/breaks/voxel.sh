#!/usr/bin/env bash
# Break 2 on the cohort model: a held-out BraTS subject's T1 rewritten at 0.7 mm in-plane (as a
# 0.7 mm 3D T1 would be) and LAS; predict before (e066ee3, --mask nonzero: it had no other way)
# and after (this checkout, no flag); both scored on the 1 mm training grid against the real T2.
set -eu
. /work/main/.venv/bin/activate
RUN=$1; W=/tmp/exp/voxel; rm -rf $W; mkdir -p $W; cd $W
python - "$RUN" <<'PY'
import sys, json, numpy as np, nibabel as nib
from pathlib import Path
from nibabel import orientations
from scipy import ndimage
sys.path.insert(0, "/work/main")
from mrsynth.config import load_config
from mrsynth.data.dataset import subject_splits
from mrsynth.data.io import read_nifti
run = Path(sys.argv[1]); cfg = load_config(run / "config.yaml")
tests = subject_splits(cfg.data)["test"]
rows = []
for files in tests:
    volume, g = read_nifti(files.t1)
    f = np.array([0.7, 0.7, 1.0])
    shape = tuple(int(round(n / s)) for n, s in zip(volume.shape, f))
    fine = ndimage.affine_transform(volume, f, offset=0.5 * f - 0.5, output_shape=shape, order=3, mode="nearest")
    fine = np.where(ndimage.affine_transform((volume != 0).astype(np.float32), f, offset=0.5 * f - 0.5, output_shape=shape, order=1) >= 0.5, np.maximum(fine, 1e-3), 0.0)
    scale = np.diag([*f, 1.0]); scale[:3, 3] = 0.5 * f - 0.5
    t = orientations.ornt_transform(orientations.axcodes2ornt("RAS"), orientations.axcodes2ornt("LAS"))
    nib.save(nib.Nifti1Image(fine.astype(np.float32), g.ras_affine @ scale).as_reoriented(t), f"{files.subject}_t1_07mm.nii.gz")
    rows.append({"subject": files.subject, "t1": str(files.t1), "t2": str(files.t2)})
Path("subjects.json").write_text(json.dumps(rows))
PY
for side in before after; do
  code=/work/main; extra=""; [ $side = before ] && { code=/tmp/before; extra="--mask nonzero"; }
  for f in *_t1_07mm.nii.gz; do python $code/run.py predict --checkpoint $RUN --input $f --out out_$side $extra --no-progress > /dev/null 2>&1; done
done
python - "$RUN" <<'PY'
import sys, json, numpy as np
from pathlib import Path
sys.path.insert(0, "/work/main")
from mrsynth.config import load_config
from mrsynth.data.contract import read_contract
from mrsynth.data.io import read_nifti
from mrsynth.data.normalization import fit_normalization
from mrsynth.data.preprocess import nonzero_foreground, resample_to
from mrsynth.evaluation.metrics import volume_metrics
run = Path(sys.argv[1]); cfg = load_config(run / "config.yaml"); ref = read_contract(run).t2_reference
print("| subject | predict before (0.7 mm, network at 0.7 mm) psnr_z / ssim_z | predict after (resampled to 1 mm and back) psnr_z / ssim_z |")
print("|---|---|---|")
for row in json.loads(Path("subjects.json").read_text()):
    t2, g = read_nifti(row["t2"]); t1, _ = read_nifti(row["t1"]); mask = nonzero_foreground(t1)
    t2n = np.where(mask, fit_normalization(t2, mask, cfg.data, row["t2"], "t2").normalize(t2), 0)
    cells = []
    for side in ("before", "after"):
        pred, pg = read_nifti(next(Path(f"out_{side}").glob(f"{row['subject']}_t1_07mm_synthT2.nii.gz")))
        p = resample_to(pred, pg, g, order=1)
        pn = np.where(mask, (p - ref.offset) / ref.scale, 0).astype(np.float32)
        m = volume_metrics(pn, t2n.astype(np.float32), mask, None)
        cells.append(f"{m['psnr_z']:.2f} / {m['ssim_z']:.3f}")
    print(f"| {row['subject']} | {cells[0]} | {cells[1]} |")
PY
