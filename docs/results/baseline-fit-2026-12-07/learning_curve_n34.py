"""The learning curve's all-34 points (fold 0 held out, seeds 0-2) with the baselines refitted:
each point's U-Net mean minus the better baseline's mean over the 9 held-out patients, with the
published baseline rows (fitted on the first 20 of the 34) and with baselines_all_training.csv's.
Run from the repository root: python docs/results/baseline-fit-2026-12-07/learning_curve_n34.py"""
import csv

HERE = "docs/results/baseline-fit-2026-12-07"
new = {(r["subject"], r["method"]): r for r in csv.DictReader(open(f"{HERE}/baselines_all_training.csv"))}
for seed in range(3):
    rows = list(csv.DictReader(open(f"docs/results/cohort-2026-12-04/learning-curve/seed-{seed}/n-34/eval/per_subject.csv")))
    out = []
    for metric in ("psnr_z", "ssim_z"):
        for fit in ("first 20", "all 34"):
            mean = {}
            for method in ("jax", "linear", "histmatch"):
                values = [float((new[r["subject"], method] if fit == "all 34" and method != "jax" else r)[metric])
                          for r in rows if r["method"] == method]
                mean[method] = sum(values) / len(values)
            better = max(("linear", "histmatch"), key=mean.get)
            out.append(f"{metric} ({fit}) {mean['jax'] - mean[better]:+.4f} over {better} {mean[better]:.4f}")
    print(f"seed {seed}: " + " | ".join(out))
