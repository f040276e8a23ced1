"""Each re-pooled cross-validation's margin over the better baseline (the baseline with the higher
mean), as published (baselines fitted on the first 20 training patients by id) and re-pooled
(fitted on all of them). Run from the repository root:
python docs/results/baseline-fit-2026-12-07/margins.py"""
import json

OLD = "docs/results/cohort-2026-12-04"
NEW = "docs/results/baseline-fit-2026-12-07/repooled"
CVS = {"steps-3000/cv-seed-0": "levers-cpu/", "steps-3000/cv-seed-1": "levers-cpu/", "steps-3000/cv-seed-2": "levers-cpu/",
       "steps-3000/cv-seeds-0-1": "levers-cpu/", "steps-3000/cv-seeds": "levers-cpu/",
       "recommended/cv-seed-0": "levers-cpu/", "torch-recommended/cv-seed-0": "levers-cpu/", "cv-300steps": ""}
for name, prefix in CVS.items():
    for fit, path in (("first 20", f"{OLD}/{prefix}{name}"), ("all", f"{NEW}/{name}")):
        methods = json.load(open(f"{path}/summary.json"))["methods"]
        run = next(m for m, e in methods.items() if e["kind"] == "run")
        mean = {m: {k: v["mean"] for k, v in e["metrics"].items()} for m, e in methods.items()}
        cells = []
        for metric in ("psnr_z", "ssim_z"):
            better = max(("linear", "histmatch"), key=lambda b: mean[b][metric])
            cells.append(f"{metric} {mean[run][metric]:.4f} - {better} {mean[better][metric]:.4f} = "
                         f"{mean[run][metric] - mean[better][metric]:+.4f}")
        print(f"{name:28s} {fit:8s} " + " | ".join(cells))
