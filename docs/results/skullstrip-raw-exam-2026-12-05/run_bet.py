"""Raw exam: BET mask variants -> npz + overlay PNG."""
import sys, time, numpy as np, nibabel as nib
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from mrsynth.data.io import read_nifti
from mrsynth.data.skullstrip import extract_brain
t1, geo = read_nifti(str(__import__("pathlib").Path(__file__).resolve().parents[4] / "shared/data/raw_exam_upenn") + "/pat1_t1_axial_3D.nii.gz")
print(t1.shape, geo.voxel_size)
t = time.time(); m = extract_brain(t1, geo.voxel_size); print("s", time.time() - t, "mL", m.sum() * np.prod(geo.voxel_size) / 1000)
np.savez_compressed("base.npz", t1=t1, mask=m)
