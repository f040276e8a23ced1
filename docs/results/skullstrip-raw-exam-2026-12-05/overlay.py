import sys, numpy as np, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
d = np.load(sys.argv[1]); t1, m = d["t1"], d["mask"]
# RAS array (read_nifti gives RAS+): axis0 L->R, axis1 P->A, axis2 I->S
fig, axes = plt.subplots(3, 4, figsize=(14, 10))
lo, hi = np.percentile(t1[t1 > 0], [1, 99.5])
for r, ax_i in enumerate(range(3)):
    n = t1.shape[ax_i]
    for c, f in enumerate((0.3, 0.45, 0.55, 0.7)):
        i = int(n * f); sl = np.take(t1, i, ax_i); ms = np.take(m, i, ax_i)
        a = axes[r, c]; a.imshow(sl.T, origin="lower", cmap="gray", vmin=lo, vmax=hi)
        a.contour(ms.T.astype(float), [0.5], colors="r", linewidths=0.8); a.set_title(f"axis{ax_i} {i}"); a.axis("off")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=60)
