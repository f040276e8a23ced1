import sys, numpy as np
from scipy import ndimage
d = np.load(sys.argv[1]); t1 = d["t1"]; m = d["mask"]; f = float(sys.argv[2]); r = int(sys.argv[3])
inside = t1[m]
hist, edges = np.histogram(inside, bins=100, range=(0, np.percentile(inside, 99.9)))
wm = edges[np.argmax(hist * (edges[:-1] > np.median(inside)))]
keep = m & (t1 <= f * wm)
ball = ndimage.generate_binary_structure(3, 1)
ball = ndimage.iterate_structure(ball, r) if r > 1 else ball
opened = ndimage.binary_opening(keep, structure=ball)
lab, n = ndimage.label(opened); sizes = ndimage.sum(opened, lab, range(1, n + 1))
big = lab == (1 + int(np.argmax(sizes)))
out = ndimage.binary_fill_holes(big)
print("removed bright", (m & ~keep).sum(), "final mL %.0f" % (out.sum() * 0.9765625**2 / 1000), "vs", "%.0f" % (m.sum() * 0.9765625**2 / 1000))
np.savez_compressed(sys.argv[4], t1=t1, mask=out)
