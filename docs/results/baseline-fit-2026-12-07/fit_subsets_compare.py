import csv, collections, glob
rows = list(csv.DictReader(open("docs/results/baseline-fit-2026-12-07/fit_subsets.csv")))
by = {(r["subject"], r["method"], r["fit"]): r for r in rows}
subjects = sorted({s for (s, m, f) in by if all((s, mm, ff) in by for mm in ["linear","histmatch"] for ff in ["first20","spread20","all"])})
pub = {}
for p in glob.glob("docs/results/cohort-2026-12-04/levers-cpu/steps-3000/fold-*-seed-0/seed-0/n-*/eval/per_subject.csv"):
    for r in csv.DictReader(open(p)): pub[r["subject"], r["method"]] = r
dev = collections.defaultdict(float)
for r in rows:
    if r["fit"] == "first20":
        for c in ["psnr","ssim","psnr_z","ssim_z"]:
            dev[c] = max(dev[c], abs(float(r[c]) - float(pub[r["subject"], r["method"]][c])))
print("first20 vs published, max |diff|:", dict(dev))
print("subjects:", len(subjects))
C = ["psnr","ssim","psnr_z","ssim_z"]
for m in ["linear","histmatch"]:
    for fit in ["first20","spread20","all"]:
        print(f"{m:9s} {fit:8s}", " ".join(f"{c} {sum(float(by[s,m,fit][c]) for s in subjects)/len(subjects):.4f}" for c in C))
for m in ["linear","histmatch"]:
  for fit in ["spread20","all"]:
    for c in C:
      d = [float(by[s,m,fit][c]) - float(by[s,m,"first20"][c]) for s in subjects]
      print(f"{m} {fit}-first20 {c}: mean {sum(d)/len(d):+.4f} min {min(d):+.4f} max {max(d):+.4f}")
