"""The published cross-validations re-pooled with the baselines as evaluate now fits them: each
fold evaluation's per_subject.csv keeps its run's and identity's rows and takes the linear and
histmatch rows of rescore_baselines.py's CSV (same subjects, every metric), then the folds are
pooled by the same code that pooled them first (lever_sweep.write_cross_validations, and
crossval.write_pooled_tables for cv-300steps). Writes OUT/<cross-validation>/ beside nothing
else; run from the repository root:

    python docs/results/baseline-fit-2026-12-07/repool.py BASELINES.csv OUT
"""
import csv
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
import lever_sweep  # noqa: E402
from mrsynth.experiments.crossval import write_pooled_tables  # noqa: E402

COHORT = Path("docs/results/cohort-2026-12-04")
LEVERS = ("steps-3000", "recommended", "torch-recommended", "torch-plain-3000")  # each of their seeds with all 5 folds
REFITTED = ("linear", "histmatch")

new_rows = {}
with open(sys.argv[1], newline="") as handle:
    for row in csv.DictReader(handle):
        row.pop("fold")
        new_rows[row["subject"], row["method"]] = row
out = Path(sys.argv[2])


def mirror(eval_dir: Path, target: Path) -> None:
    """eval_dir's per_subject.csv, the refitted baselines' rows replaced, and its methods' kinds
    (summary.json, or where a kept folder holds only summary.csv, the kinds from it)."""
    target.mkdir(parents=True)
    if (eval_dir / "summary.json").is_file():
        shutil.copy(eval_dir / "summary.json", target / "summary.json")
    else:
        with open(eval_dir / "summary.csv", newline="") as handle:
            kinds = {r["method"]: {"kind": r["kind"]} for r in csv.DictReader(handle)}
        (target / "summary.json").write_text(json.dumps({"methods": kinds}))
    with open(eval_dir / "per_subject.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    replaced = [({**row, **{k: new_rows[row["subject"], row["method"]][k] for k in fields}}
                 if row["method"] in REFITTED else row) for row in rows]
    assert sum(r["method"] in REFITTED for r in rows) == 2 * len({r["subject"] for r in rows})
    with open(target / "per_subject.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(replaced)


levers = out / "mirror"
for variant in LEVERS:
    for seed in lever_sweep.point_seeds(COHORT / "levers-cpu", variant):
        for found in (lever_sweep.scored_evaluations(COHORT / "levers-cpu", variant, seed, 5) or {}).values():
            mirror(found, levers / variant / found.relative_to(COHORT / "levers-cpu" / variant))
written = lever_sweep.write_cross_validations(levers, "configs/brats_2d.yaml", list(LEVERS), 5)
for folder in written:
    shutil.copytree(folder, out / folder.parent.name / folder.name)
cv = json.loads((COHORT / "cv-300steps" / "cv.json").read_text())
sites = {s: e["site"] for s, e in cv["subjects"].items()}
folds = {s: e["fold"] for s, e in cv["subjects"].items()}
assert (sites, folds) == lever_sweep.sweep_folds("configs/brats_2d.yaml", 5)  # the folds rescored
evaluations = {}
for fold in range(5):
    mirror(COHORT / "cv-300steps" / f"fold-{fold}", levers / "cv-300steps" / f"fold-{fold}")
    evaluations[fold] = levers / "cv-300steps" / f"fold-{fold}"
write_pooled_tables(out / "cv-300steps", folds, sites, evaluations)
shutil.rmtree(levers)
print("\n".join(str(p) for p in sorted(out.glob("*/*/summary.md")) + [str(out / "cv-300steps" / "summary.md")]))
