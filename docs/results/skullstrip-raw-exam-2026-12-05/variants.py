import sys, time, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import mrsynth.data.skullstrip as ss
d = np.load("base.npz"); t1 = d["t1"]; vs = (0.9765625, 0.9765625, 1.0)
for bt in map(float, sys.argv[1:]):
    ss._FRACTIONAL_THRESHOLD = bt
    t = time.time(); m = ss.extract_brain(t1, vs)
    print(bt, "s %.0f" % (time.time() - t), "mL %.0f" % (m.sum() * np.prod(vs) / 1000), "dice vs base %.3f" % ss.dice(m, d["mask"]), flush=True)
    np.savez_compressed(f"bt{bt}.npz", t1=t1, mask=m)
