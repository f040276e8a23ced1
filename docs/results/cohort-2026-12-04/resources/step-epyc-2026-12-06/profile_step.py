"""Where the JAX training step of configs/brats_2d.yaml (16 crops of 128x128, 5 input slices)
spends its time on this CPU: 3 steps under jax.profiler after 4 warm ones, each XLA op's time
summed over the step's threads, grouped by kind (the op name without its number). A study
script, run from the repository root:

    python docs/results/cohort-2026-12-04/resources/step-epyc-2026-12-06/profile_step.py
"""
import collections
import glob
import sys
import tempfile

import jax
from jax._src.lib import _profile_data

sys.path.insert(0, ".")
from jax_impl.bench import JaxSession  # noqa: E402
from mrsynth.bench.session import synthetic_batch  # noqa: E402
from mrsynth.config import load_config  # noqa: E402

STEPS = 3
cfg = load_config("configs/brats_2d.yaml", ["train.precision=float32"])
session = JaxSession(cfg, synthetic_batch(cfg.train.batch_size, list(cfg.data.patch_size), cfg.model.in_channels))
for _ in range(4):
    session.synced_step()
trace = tempfile.mkdtemp()
jax.profiler.start_trace(trace)
for _ in range(STEPS):
    session.synced_step()
jax.profiler.stop_trace()
profile = _profile_data.ProfileData.from_file(glob.glob(f"{trace}/**/*.xplane.pb", recursive=True)[0])
by_kind: collections.Counter = collections.Counter()
wall = 0.0
for plane in profile.planes:
    for line in plane.lines:
        for event in line.events:
            if line.name.startswith("tf_XLA") and not event.name.startswith("ThunkExecutor"):
                by_kind[event.name.rsplit(".", 1)[0]] += event.duration_ns / STEPS / 1e6
            elif line.name == "python" and "synced_step" in event.name:
                wall += event.duration_ns / STEPS / 1e6
print(f"step (wall): {wall:.1f} ms; XLA ops summed: {sum(by_kind.values()):.1f} ms")
for kind, ms in by_kind.most_common(20):
    print(f"{ms:8.1f} ms  {kind}")
print({"jax": jax.__version__, "batch": cfg.train.batch_size, "patch": list(cfg.data.patch_size),
       "in_channels": cfg.model.in_channels})
