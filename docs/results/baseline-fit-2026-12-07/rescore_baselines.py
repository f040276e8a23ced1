"""The cross-validation's baselines as evaluate now fits them: per fold of the 5-fold
site-stratified split of configs/brats_2d.yaml, linear and histogram matching fitted on all the
fold's training subjects (mrsynth.evaluation.runner.fit_training_baselines), clipped to the
fold's training T2 range as evaluate clips them, and each held-out subject scored with every
metric (mrsynth.evaluation.scoring.score_subject). Writes one CSV: fold, then evaluate's
per_subject.csv columns.

    python docs/results/baseline-fit-2026-12-07/rescore_baselines.py OUT.csv [--set KEY=VALUE ...]
"""
import argparse
import csv

import numpy as np

from mrsynth.config import load_config, with_absolute_paths
from mrsynth.data.contract import output_t2_range
from mrsynth.data.normalization import NormStats
from mrsynth.data.preprocess import load_volume
from mrsynth.evaluation.runner import fit_training_baselines
from mrsynth.evaluation.scoring import score_subject
from mrsynth.experiments.crossval import site_folds
from mrsynth.subjects import available_pairs

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--set", action="append", default=[])
args = parser.parse_args()
cfg = with_absolute_paths(load_config("configs/brats_2d.yaml", args.set))
sites, folds = site_folds(cfg, 5, 0)
files = {f.subject: f for f in available_pairs(cfg.data)}
rows = []
for fold in range(5):
    train = [files[s] for s in sorted(s for s, f in folds.items() if f != fold)]
    held_out = [files[s] for s in sorted(s for s, f in folds.items() if f == fold)]
    volumes = [load_volume(f, cfg.data) for f in train]  # the contract's clip range, as training built it
    reference = NormStats(offset=float(np.mean([v.t2_stats.offset for v in volumes])),
                          scale=float(np.mean([v.t2_stats.scale for v in volumes])))
    lo, hi = output_t2_range(volumes, reference)
    del volumes
    baselines = {k: b for k, b in fit_training_baselines(train, cfg.data).items() if k != "identity"}
    for f in held_out:
        volume = load_volume(f, cfg.data)
        inside = volume.mask > 0
        predictions = {name: np.where(inside, np.clip(b.predict(volume), lo, hi), b.predict(volume))
                       for name, b in baselines.items()}
        rows += [{"fold": fold, **r} for r in score_subject(f.subject, predictions, volume.t2, volume.mask,
                                                            cfg.eval.data_range, volume.labels)]
        print(fold, f.subject, flush=True)
with open(args.out, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
