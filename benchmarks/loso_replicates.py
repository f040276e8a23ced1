"""Replicates of a leave-one-subject-out sweep: is the JAX - PyTorch gap larger than a seed's?

A per-slice paired test between one JAX and one PyTorch run calls a 0.1-0.2 dB gap significant
(loso_real_pairs.py's table): it tests two particular training trajectories, over slices that
are correlated. The question a user asks is whether the backend, rather than the run, changes
the result. This script takes loso_real_pairs.py outputs in which the same variant was run
several times under different ``train.seed`` (each with ``--shared-init``, so both backends
of a seed start from the same weights and read the same batches), and treats every variant in
the given files as one replicate of one configuration:

    python benchmarks/loso_replicates.py --out OUT  run0/loso.json run1/loso.json ...

It reports, per fold and replicate, both backends' psnr_z / ssim_z and their margins over the
fold's best baseline; the backend gap tested over replicates (fold x seed pairs: paired t,
Wilcoxon, and an exact sign-flip test of the per-run mean of per-slice differences, in which the
run, not the slice, is the unit); and, as the yardstick of run-to-run noise, the gaps between
two seeds of the same backend on the same fold.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrsynth.backend import BACKENDS  # noqa: E402
from mrsynth.errors import DataError, MrsynthError  # noqa: E402
from mrsynth.evaluation.stats import (  # noqa: E402
    SIGN_FLIP_EXACT_UP_TO, paired_test, sign_flip_test, summarize)
from mrsynth.fileio import atomic_write_text, make_folder  # noqa: E402
from mrsynth.reporting import json_text, markdown_table  # noqa: E402


def replicates(paths: list[Path]) -> list[dict]:
    """One entry per (file, variant, held-out subject) run with both backends: their psnr_z and
    ssim_z, the fold's best baseline on each, and the per-slice JAX - PyTorch mean."""
    out = []
    for path in paths:
        try:
            report = json.loads(path.read_text())
            rows, tests = report["rows"], report["backend_tests"]
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{path}: not a loso_real_pairs.py loso.json ({err})") from err
        slice_means = {(t["variant"], t["fold"]): t["mean_diff"] for t in tests}
        for variant, fold in dict.fromkeys((r["variant"], r["held_out"]) for r in rows):
            fold_rows = [r for r in rows if (r["variant"], r["held_out"]) == (variant, fold)]
            runs = {r["method"]: r for r in fold_rows if r["kind"] == "run"}
            baselines = [r for r in fold_rows if r["kind"] == "baseline"]
            if not all(b in runs for b in BACKENDS) or not baselines:
                continue
            entry = {"file": str(path), "replicate": variant, "held_out": fold,
                     "best_baseline_psnr_z": max(b["psnr_z"] for b in baselines),
                     "best_baseline_ssim_z": max(b["ssim_z"] for b in baselines),
                     "slice_mean_diff": slice_means.get((variant, fold), math.nan)}
            for backend in BACKENDS:
                entry[f"{backend}_psnr_z"] = runs[backend]["psnr_z"]
                entry[f"{backend}_ssim_z"] = runs[backend]["ssim_z"]
            out.append(entry)
    if not out:
        raise DataError(f"{', '.join(map(str, paths))}: no fold with both a JAX and a PyTorch run")
    return out


def backend_gap(reps: list[dict]) -> list[dict]:
    """JAX - PyTorch over replicates, per metric: paired t and Wilcoxon of the volumes' values,
    and the sign-flip test of the per-run slice means; each with the 95% interval of the mean
    difference (:func:`summarize`: a percentile bootstrap below 10 pairs)."""
    rows = []
    for metric in ("psnr_z", "ssim_z"):
        jax, torch = [r[f"jax_{metric}"] for r in reps], [r[f"torch_{metric}"] for r in reps]
        interval = summarize([a - b for a, b in zip(jax, torch)])
        rows.append({"metric": metric, "statistic": "volume", **paired_test(jax, torch),
                     "ci_low": interval["ci_low"], "ci_high": interval["ci_high"]})
    slice_means = [r["slice_mean_diff"] for r in reps]
    flip, interval = sign_flip_test(slice_means), summarize(slice_means)
    rows.append({"metric": "psnr_z", "statistic": "per-run mean of per-slice differences", "n": flip["n"],
                 "mean_diff": flip["mean_diff"], "ci_low": interval["ci_low"], "ci_high": interval["ci_high"],
                 "p_t": math.nan, "p_w": math.nan, "p_flip": flip["p"], "note": ""})
    return rows


def seed_noise(reps: list[dict]) -> dict[str, dict[str, float]]:
    """|psnr_z| differences between two replicates of the same backend and fold (seed noise: another
    ``train.seed`` draws other initial weights and other batches), against those between the two
    backends of the same replicate (backend gap)."""
    seed_gaps = []
    for (fold, backend) in itertools.product(dict.fromkeys(r["held_out"] for r in reps), BACKENDS):
        values = [r[f"{backend}_psnr_z"] for r in reps if r["held_out"] == fold]
        seed_gaps += [abs(a - b) for a, b in itertools.combinations(values, 2)]
    backend_gaps = [abs(r["jax_psnr_z"] - r["torch_psnr_z"]) for r in reps]

    def spread(gaps: list[float]) -> dict[str, float]:
        return {"n": len(gaps), "mean_abs": float(np.mean(gaps)) if gaps else math.nan,
                "max_abs": float(np.max(gaps)) if gaps else math.nan}
    return {"same backend, two seeds": spread(seed_gaps), "same seed, two backends": spread(backend_gaps)}


def margins(reps: list[dict]) -> list[dict]:
    """Per fold and backend, over replicates: the psnr_z margin over the best baseline and the
    ssim_z difference to the best baseline's ssim_z, as mean and range."""
    rows = []
    for fold in dict.fromkeys(r["held_out"] for r in reps):
        here = [r for r in reps if r["held_out"] == fold]
        for backend in BACKENDS:
            psnr = [r[f"{backend}_psnr_z"] - r["best_baseline_psnr_z"] for r in here]
            ssim = [r[f"{backend}_ssim_z"] - r["best_baseline_ssim_z"] for r in here]
            rows.append({"held_out": fold, "backend": backend, "n": len(here),
                         "psnr_z_margin_mean": float(np.mean(psnr)), "psnr_z_margin_min": float(np.min(psnr)),
                         "psnr_z_margin_max": float(np.max(psnr)), "ssim_z_margin_mean": float(np.mean(ssim)),
                         "ssim_z_margin_min": float(np.min(ssim)), "ssim_z_margin_max": float(np.max(ssim))})
    return rows


def _p(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3g}"


def _db(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def markdown(reps: list[dict], gap: list[dict], noise: dict, spans: list[dict]) -> str:
    per_run = markdown_table(
        ["held out", "replicate", "JAX psnr_z", "PyTorch psnr_z", "best baseline psnr_z", "JAX ssim_z",
         "PyTorch ssim_z", "best baseline ssim_z", "JAX - PyTorch per-slice mean (dB)"],
        [[r["held_out"], r["replicate"], f"{r['jax_psnr_z']:.2f}", f"{r['torch_psnr_z']:.2f}",
          f"{r['best_baseline_psnr_z']:.2f}", f"{r['jax_ssim_z']:.3f}", f"{r['torch_ssim_z']:.3f}",
          f"{r['best_baseline_ssim_z']:.3f}", f"{r['slice_mean_diff']:+.3f}"] for r in reps])
    span = markdown_table(
        ["held out", "backend", "replicates", "psnr_z - best baseline, mean [min, max] (dB)",
         "ssim_z - best baseline, mean [min, max]"],
        [[s["held_out"], s["backend"], str(s["n"]),
          f"{s['psnr_z_margin_mean']:+.2f} [{s['psnr_z_margin_min']:+.2f}, {s['psnr_z_margin_max']:+.2f}]",
          f"{s['ssim_z_margin_mean']:+.3f} [{s['ssim_z_margin_min']:+.3f}, {s['ssim_z_margin_max']:+.3f}]"]
         for s in spans])
    tests = markdown_table(
        ["metric", "JAX - PyTorch of", "pairs", "mean difference [95% CI]", "p (paired t)", "p (Wilcoxon)",
         "p (sign flip)", "note"],
        [[g["metric"], g["statistic"], str(g["n"]),
          f"{g['mean_diff']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]", _p(g["p_t"]), _p(g["p_w"]),
          _p(g.get("p_flip", math.nan)), g["note"]] for g in gap])
    noise_table = markdown_table(
        ["psnr_z difference between", "pairs", "mean |difference| (dB)", "max |difference| (dB)"],
        [[k, str(v["n"]), _db(v["mean_abs"]), _db(v["max_abs"])] for k, v in noise.items()])
    flip = next(g for g in gap if "p_flip" in g)
    floor = f"{2 / 2 ** flip['n']:.3g}" if 2 <= flip["n"] <= SIGN_FLIP_EXACT_UP_TO else "-"
    return ("# Replicates of the leave-one-subject-out sweep\n\n"
            "Each replicate is one variant of the given loso.json files (the same configuration under another "
            "`train.seed`); a pair is one replicate's JAX and PyTorch runs of one fold.\n\n"
            f"## Per run\n\n{per_run}\n\n## Margins over the best baseline, across replicates\n\n{span}\n\n"
            "## JAX vs PyTorch, paired over folds and replicates\n\nThe run is the unit: the sign-flip test "
            "permutes the sign of each run's mean per-slice difference, so correlated slices within a run do "
            f"not count as independent evidence. With {flip['n']} pairs the smallest p it can give is "
            f"{floor}.\n\n{tests}\n\n## Backend gap against seed noise\n\n{noise_table}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("reports", type=Path, nargs="+", metavar="LOSO_JSON")
    args = parser.parse_args(argv)
    try:
        reps = replicates(args.reports)
    except MrsynthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gap, noise, spans = backend_gap(reps), seed_noise(reps), margins(reps)
    make_folder(args.out, "--out")
    text = markdown(reps, gap, noise, spans)
    atomic_write_text(args.out / "replicates.json",
                      json_text({"replicates": reps, "backend_gap": gap, "seed_noise": noise, "margins": spans}))
    atomic_write_text(args.out / "replicates.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
