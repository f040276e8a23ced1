#!/usr/bin/env bash
# The four breaks of issue 28, before (e066ee3) and after (this checkout), on one tiny prepared set.
set -u
. /work/main/.venv/bin/activate
W=/tmp/exp/breaks; rm -rf $W; mkdir -p $W; cd $W
python /work/main/run.py demo-data --out raw --subjects 5 --shape 64 76 56 --no-progress > /dev/null
python - <<'PY'
import nibabel as nib, numpy as np, glob
for f in sorted(glob.glob("raw/*-T2.nii.gz")):
    img = nib.load(f); nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 2, axis=0), img.affine, img.header), f)
PY
python /work/main/run.py prepare-ixi --t1-dir raw --t2-dir raw --out prep --grid t1 --split 0.6,0.2,0.2 --no-progress > /dev/null
TEST=$(awk -F, '$7=="test"{print $1}' prep/manifest.csv | head -1)
T1=$(ls raw/${TEST}-*-T1.nii.gz)
mkdir -p new; python - "$T1" <<'PY'
import sys, numpy as np, nibabel as nib
from nibabel import orientations
from scipy import ndimage
sys.path.insert(0, "/work/main")
from mrsynth.data.io import read_nifti
from mrsynth.data.preprocess import otsu_foreground
volume, g = read_nifti(sys.argv[1]); f = np.full(3, 0.5)
fine = ndimage.affine_transform(volume, f, offset=0.5*f-0.5, output_shape=tuple(2*n for n in volume.shape), order=1, mode="nearest")
scale = np.diag([*f, 1.0]); scale[:3, 3] = 0.5*f - 0.5
t = orientations.ornt_transform(orientations.axcodes2ornt("RAS"), orientations.axcodes2ornt("LAS"))
name = sys.argv[1].split("/")[-1]
nib.save(nib.Nifti1Image(fine.astype(np.float32), g.ras_affine @ scale).as_reoriented(t), "new/" + name)
nib.save(nib.Nifti1Image(otsu_foreground(fine).astype(np.uint8), g.ras_affine @ scale).as_reoriented(t), "new/" + name.replace("-T1", "-headmask"))
PY
NEW=$(ls new/*-T1.nii.gz)
SETS="--set data.manifest=$W/prep/manifest.csv --set data.workers=0 --set data.patch_size=[48,56] --set model.depth=2 --set model.base_channels=8 --set model.channel_mults=[1,2,4] --set model.groups=2 --set train.steps=60 --set train.batch_size=8 --set train.warmup_steps=4 --set train.lr=3e-3 --set train.precision=float32 --set train.log_every=20 --set train.val_every=60 --set train.ckpt_every=60"
for side in before after; do
  code=/work/main; [ $side = before ] && code=/tmp/before
  echo "=================== $side ($(git -C $code rev-parse --short HEAD))"
  python $code/run.py train --backend jax --config $code/configs/ixi_2d.yaml --run-dir run_$side --set data.cache_dir=$W/cache_$side $SETS --no-progress -q > train_$side.log 2>&1
  echo "\$ predict --checkpoint RUN --input $NEW --out out   # 1: no flag"
  python $code/run.py predict --checkpoint run_$side --input $NEW --out out_$side/1 --no-progress 2>&1 | sed 's|/tmp/exp/breaks/||g'
  echo "\$ predict ... --mask otsu   # 1: the mask prepare-ixi made"
  python $code/run.py predict --checkpoint run_$side --input $NEW --out out_$side/1b --mask otsu --no-progress 2>&1 | sed 's|/tmp/exp/breaks/||g'
  echo "\$ predict ... --input prep/subjects/$TEST/<T1 copy elsewhere> --mask prep/subjects/$TEST   # 4: the data folder as mask folder"
  mkdir -p copy_$side; cp prep/subjects/$TEST/*-T1.nii.gz copy_$side/
  python $code/run.py predict --checkpoint run_$side --input copy_$side --out out_$side/4 --mask prep/subjects/$TEST --no-progress 2>&1 | sed 's|/tmp/exp/breaks/||g'
  echo "\$ predict ... --input $NEW --mask <its 1 mm Otsu head mask>   # 2: the 1 mm LAS input"
  python $code/run.py predict --checkpoint run_$side --input $NEW --out out_$side/2 --mask ${NEW/-T1/-headmask} --no-progress 2>&1 | sed 's|/tmp/exp/breaks/||g' | grep -v "^wrote"
  python - $side $TEST <<'PY'
import sys, json, csv, glob
sys.path.insert(0, "/work/main")
from pathlib import Path
from mrsynth.config import load_config
from mrsynth.data.io import read_nifti, write_like
from mrsynth.data.preprocess import resample_to
from mrsynth.data.normalization import NormStats
from mrsynth.evaluation.score_files import score_prediction
side, test = sys.argv[1:]
run = Path(f"run_{side}"); ref = NormStats.from_json(json.loads((run / "preprocessing.json").read_text())["t2_reference"])
row = next(r for r in csv.DictReader(open("prep/manifest.csv")) if r["subject"] == test)
pred_path = next(Path(f"out_{side}/2").glob("*_synthT2.nii.gz"))
pred, pg = read_nifti(pred_path); _, grid = read_nifti("prep/" + row["t1"])
write_like(resample_to(pred, pg, grid, order=1), grid, Path(f"ongrid_{side}.nii.gz"))
s = score_prediction(Path(f"ongrid_{side}.nii.gz"), Path("prep/" + row["t2"]), Path("prep/" + row["mask"]), ref, load_config(run / "config.yaml").data)
print(f"   2: 1 mm LAS input with its head mask, scored on the training grid in the subject's mask: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}")
PY
  python $code/run.py evaluate --checkpoint run_$side --out eval_$side --no-progress > /dev/null 2>&1
  python -c "import csv; r=[x for x in csv.DictReader(open('eval_$side/per_subject.csv')) if x['method']=='jax' and x['subject']=='$TEST'][0]; print('   evaluate on the training grid: PSNR %.2f dB, SSIM %.3f' % (float(r['psnr']), float(r['ssim'])))"
done
