import sys, time, numpy as np, SimpleITK as sitk
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from mrsynth.ixi.registration import n4_correct
import mrsynth.data.skullstrip as ss
from scipy import ndimage
d = np.load("base.npz"); t1 = d["t1"].astype(np.float32); vs = (0.9765625, 0.9765625, 1.0)
img = sitk.GetImageFromArray(np.transpose(t1, (2, 1, 0))); img.SetSpacing(vs)
head = t1 > np.percentile(t1, 50)  # rough head mask for the fit
head = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 0.1 * np.percentile(t1, 99), iterations=3))
mimg = sitk.GetImageFromArray(np.transpose(head.astype(np.uint8), (2, 1, 0))); mimg.CopyInformation(img)
t = time.time(); cor = n4_correct(img, mimg); print("n4 s %.0f" % (time.time() - t))
c = np.transpose(sitk.GetArrayFromImage(cor), (2, 1, 0)).astype(np.float32)
t = time.time(); m = ss.extract_brain(c, vs); print("bet s %.0f mL %.0f dice vs base %.3f" % (time.time() - t, m.sum() * np.prod(vs) / 1000, ss.dice(m, d["mask"])))
np.savez_compressed("n4.npz", t1=c, mask=m)
