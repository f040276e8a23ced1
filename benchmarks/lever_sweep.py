"""The levers of issue 27, measured the same way: each (variant, fold, seed) point is one
`run.py learning-curve --sizes all` call (train on the fold's whole training pool with that seed,
score the fold's held-out subjects against the baselines fitted on the same pool).

Points run ``--parallel`` at a time in priority order (every variant's first point before any
variant's second, both seeds of the first fold first), until ``--deadline`` seconds: a point whose
predicted end (the slowest finished point's time) passes the deadline is not started, and points
still running at the deadline are stopped, so a fixed device lease returns whole points. A later
call with the same ``--out`` skips finished points (the learning-curve folder continues itself).

    python benchmarks/lever_sweep.py --config configs/brats_2d.yaml --out OUT \\
        --variants recommended,no-2.5d --folds 0 --seeds 0,1 --parallel 1

Writes ``OUT/<variant>/fold-<F>-seed-<S>/`` (the learning curve's folder, ``point.log`` and
``timing.json``), ``OUT/progress.log``, and ``OUT/levers.md``: per variant, the points' psnr_z and
ssim_z margins over the better baseline and their mean, then each variant against the first on
the points both have, beside the seed spread (the first variant's, or the variant's own where
larger). A variant and seed with a point on every fold is also pooled into a cross-validation summary, ``OUT/<variant>/cv-seed-<S>/``,
and two or more such seeds into ``OUT/<variant>/cv-seeds/`` (:func:`write_cross_validations`). A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mrsynth.evaluation.stats import sign_flip_test, summarize  # noqa: E402
from mrsynth.experiments.learning_curve import point_rows  # noqa: E402

POLL_SECONDS = 2.0  # how often running points are checked
AUGMENTATION_OFF = ["data.bias_field=0", "data.contrast_range=0", "data.gamma_range=0"]
#: The sweep's budget, pinned: every variant trains 1000 steps with a checkpoint every 250 unless
#: it sets its own (``steps-3000``), so a variant names the same runs whatever the config's default
#: (``configs/brats_2d.yaml`` trains 3000 steps since this sweep measured more steps as the lever).
BUDGET = ["train.steps=1000", "train.ckpt_every=250"]
#: Each lever as the config overrides that turn it on (or, for the recommended parts, off).
VARIANTS: dict[str, list[str]] = {
    "recommended": [],
    "no-2.5d": ["data.context_slices=0"],
    "no-scanner-aug": AUGMENTATION_OFF,
    "residual": ["model.residual=true"],
    "l1_ssim": ["train.loss=l1_ssim"],
    "pix2pix": ["train.objective=pix2pix"],
    "wide-32": ["model.base_channels=32"],
    "deep-4": ["model.depth=4", "model.channel_mults=[1,2,4,8,16]"],
    "steps-3000": ["train.steps=3000", "train.ckpt_every=1000"],
    # The plain model at the recommended budget: the baseline the full cross-validation
    # compares the recommended parts against, both off at once.
    "plain-3000": ["data.context_slices=0", *AUGMENTATION_OFF, "train.steps=3000", "train.ckpt_every=1000"],
    "3d": [],
}
#: Variants trained from a config of their own rather than ``--config``: ``3d`` is the cohort's 3D
#: twin of ``configs/brats_2d.yaml`` (the same manifest, split seed, mask and normalization, so the
#: same folds; 64^3 patches of a 3D U-Net), so it assumes ``--config`` is that cohort's 2D config.
VARIANT_CONFIGS: dict[str, Path] = {"3d": ROOT / "configs" / "brats_3d.yaml"}
#: A variant named ``torch-<lever>`` is that lever trained by the PyTorch backend (the rest by JAX).
TORCH_PREFIX = "torch-"


def lever(variant: str) -> str:
    """The lever a variant turns on, whichever backend trains it."""
    return variant.removeprefix(TORCH_PREFIX)


def backend(variant: str) -> str:
    """The backend that trains a variant."""
    return "torch" if variant.startswith(TORCH_PREFIX) else "jax"


def point_dir(out: Path, variant: str, fold: int, seed: int) -> Path:
    return out / variant / f"fold-{fold}-seed-{seed}"


def point_command(args: argparse.Namespace, variant: str, fold: int, seed: int) -> list[str]:
    """The exact learning-curve call of one point."""
    config = str(VARIANT_CONFIGS.get(lever(variant), args.config))
    cmd = [sys.executable, str(ROOT / "run.py"), "learning-curve", "--config", config, "--backend", backend(variant),
           "--sizes", "all", "--seeds", str(seed), "--fold", str(fold), "--folds", str(args.k), "--no-progress",
           "--score-workers", str(args.score_workers), "--out", str(point_dir(args.out, variant, fold, seed))]
    for override in BUDGET + args.set + VARIANTS[lever(variant)]:
        cmd += ["--set", override]
    return cmd


def margins(point: Path) -> dict[str, float] | None:
    """The point's learning-curve row (psnr_z / ssim_z and their margins over the better
    baseline), or None before it is scored."""
    rows = point_rows(point)
    return rows[0] if rows else None


METRICS = ("psnr_z", "ssim_z")


def scored_points(out: Path, variant: str) -> dict[str, dict[str, float]]:
    """``{"fold-F-seed-S": learning-curve row}`` of the variant's scored points, in name order."""
    return {p.name: row for p in sorted((out / variant).glob("fold-*-seed-*")) if (row := margins(p))}


def seed_spread(points: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """Per metric, the largest range of margins between seeds of one fold (None without a fold
    of two seeds): how far a variant moves with the seed alone."""
    by_fold: dict[str, list[dict[str, float]]] = {}
    for name, row in points.items():
        by_fold.setdefault(name.split("-seed-")[0], []).append(row)
    folds = [rows for rows in by_fold.values() if len(rows) > 1]
    if not folds:
        return None
    return {m: max(np.ptp([r[f"{m}_margin"] for r in rows]) for rows in folds) for m in METRICS}


def paired_lines(points: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Each variant against the first (``points``: variant -> its scored points, in order) on the
    (fold, seed) points both have: ssim_z moves more between folds than between seeds, so only
    the same points compare, and a difference inside the seed spread is not a ranking. The spread
    is the larger of the first variant's and the variant's own, where it has a fold with two
    seeds: a lever can move with the seed more than the reference does."""
    first, *_ = points
    reference = points[first]
    others = {variant: own for variant, own in points.items() if variant != first}
    if not reference or not any(set(points) & set(reference) for points in others.values()):
        return []
    spread = seed_spread(reference)
    lines = ["", f"## Against {first} on the same (fold, seed) points", "",
             f"A variant's margin minus {first}'s on each point both have. {first}'s seed spread "
             + ("(the largest range between seeds of one fold): " + ", ".join(f"{m} {spread[m]:.3f}" for m in METRICS)
                if spread else "is not measured yet (no fold with two seeds)") + ". From two shared points on, "
             "the differences' 95% t interval and a sign-flip test over the points (each a whole run). "
             "Where the variant's own seed spread is larger, it is the one a difference must pass, and is "
             "given.", "",
             "| variant | shared points | psnr_z difference: mean (per point) | ssim_z difference: mean (per point) |",
             "|---|---|---|---|"]
    for variant, own in others.items():
        shared = [name for name in own if name in reference]
        if not shared:
            continue
        own_spread = seed_spread(own)
        cells = []
        for m in METRICS:
            diffs = [own[n][f"{m}_margin"] - reference[n][f"{m}_margin"] for n in shared]
            cells.append(f"{np.mean(diffs):+.3f} (" + ", ".join(f"{d:+.3f}" for d in diffs) + ")"
                         + spread_verdict(float(np.mean(diffs)), spread[m] if spread else None,
                                          own_spread[m] if own_spread else None)
                         + run_level_test(diffs))
        lines.append(f"| {variant} | {', '.join(shared)} | {cells[0]} | {cells[1]} |")
    return lines


def spread_verdict(difference: float, reference: float | None, own: float | None) -> str:
    """Whether a mean difference passes the seed spread: the reference's, or the variant's own
    where that is larger (then named with its size); nothing without the reference's."""
    if reference is None:
        return ""
    bound = max(reference, own or 0.0)
    if abs(difference) > bound:
        return ", beyond the seed spread"
    return ", inside the seed spread" + (f" (its own, {own:.3f})" if own is not None and own > reference else "")


def paired_sections(points: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """:func:`paired_lines` with each lever measured within one backend: every JAX variant and
    the first PyTorch one against the first variant (the backends compared once, on the
    recommended model), each further PyTorch variant against that first PyTorch one."""
    torch_variants = [variant for variant in points if backend(variant) == "torch"]
    lines = paired_lines({v: own for v, own in points.items() if v not in torch_variants[1:]})
    if len(torch_variants) > 1:
        lines += paired_lines({v: points[v] for v in torch_variants})
    return lines


def run_level_test(diffs: list[float]) -> str:
    """The paired differences' 95% t interval and sign-flip p over the points (whole runs, the
    unit that fold and seed randomize), from 2 points on; the smallest p that n points can give
    is 2 / 2^n, so a few points can show a difference's size but not rule one out."""
    if len(diffs) < 2:
        return ""
    interval, flip = summarize(diffs, interval="t"), sign_flip_test(diffs)
    return (f"; 95% CI [{interval['ci_low']:+.3f}, {interval['ci_high']:+.3f}], sign-flip p = {flip['p']:.3f}"
            f" (at least {2 / 2 ** len(diffs):.3f} with {len(diffs)} points)")


def write_table(out: Path, variants: list[str]) -> None:
    lines = ["# Levers: margin over the better baseline on the held-out subjects (one row per variant)", "",
             "| variant | points | psnr_z margin: mean (per point) | ssim_z margin: mean (per point) |",
             "|---|---|---|---|"]
    points = {variant: scored_points(out, variant) for variant in variants}  # each summary read once
    for variant, rows in points.items():
        if not rows:
            continue
        cells = [f"{np.mean([r[f'{m}_margin'] for r in rows.values()]):+.3f} ("
                 + ", ".join(f"{r[f'{m}_margin']:+.3f}" for r in rows.values()) + ")" for m in METRICS]
        lines.append(f"| {variant} | {', '.join(rows)} | {cells[0]} | {cells[1]} |")
    lines += paired_sections(points)
    tmp = out / "levers.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "levers.md")


def scored_evaluation(out: Path, variant: str, fold: int, seed: int) -> Path | None:
    """The point's evaluation folder (beside its run), once it holds its per-subject scores."""
    found = sorted((point_dir(out, variant, fold, seed) / f"seed-{seed}").glob("n-*/eval/per_subject.csv"))
    return found[0].parent if found else None


def run_scores(out: Path, variant: str, fold: int, seed: int,
               metrics: tuple[str, ...]) -> dict[str, dict[str, float]] | None:
    """Subject -> the trained run's ``metrics`` in the point's per_subject.csv (baselines left
    out); None while the point has no scored evaluation."""
    found = scored_evaluation(out, variant, fold, seed)
    if found is None:
        return None
    with open(found / "per_subject.csv", newline="") as handle:
        return {r["subject"]: {m: float(r[m]) for m in metrics}
                for r in csv.DictReader(handle) if r["method"] in ("jax", "torch")}


def point_seeds(out: Path, variant: str) -> list[int]:
    """The training seeds a variant has points for, on any fold."""
    return sorted({int(p.name.split("-seed-")[1]) for p in (out / variant).glob("fold-*-seed-*")})


def scored_evaluations(out: Path, variant: str, seed: int, k: int) -> dict[int, Path] | None:
    """Fold -> :func:`scored_evaluation`, when every one of the ``k`` folds has one; else None."""
    found = {fold: scored_evaluation(out, variant, fold, seed) for fold in range(k)}
    return found if all(found.values()) else None


def sweep_folds(config: str, k: int) -> tuple[dict[str, str | None], dict[str, int]]:
    """The subjects' sites and folds that every point of a sweep holds out: the learning curve's
    site-stratified split (its fold-assignment seed is always 0)."""
    from mrsynth.config import load_config
    from mrsynth.experiments.crossval import site_folds

    return site_folds(load_config(config), k, 0)


def write_cross_validations(out: Path, config: str, variants: list[str], k: int) -> list[Path]:
    """For each variant and seed that has a scored point on every one of the ``k`` folds: the
    folds pooled as ``cross-validate`` pools them (every subject held out once), into
    ``OUT/<variant>/cv-seed-<S>/`` (summary.md, summary.csv/json, per_subject.csv, folds.csv;
    no figure: that needs the runs' synthesized volumes, which a results folder does not keep);
    and a variant with two or more such seeds pooled over them as ``cross-validate --train-seeds``
    pools them, into ``OUT/<variant>/cv-seeds/``."""
    complete = {}
    for variant in variants:
        for seed in point_seeds(out, variant):
            evaluations = scored_evaluations(out, variant, seed, k)
            if evaluations:
                complete[variant, seed] = evaluations
    if not complete:
        return []
    from mrsynth.experiments.crossval import write_pooled_tables
    from mrsynth.experiments.crossval_seeds import write_seed_pool

    sites, folds = sweep_folds(config, k)
    written = []
    for (variant, seed), evaluations in complete.items():
        target = out / variant / f"cv-seed-{seed}"
        target.mkdir(exist_ok=True)
        write_pooled_tables(target, folds, sites, evaluations)
        written.append(target)
    for variant in variants:
        seeds = {seed: evaluations for (v, seed), evaluations in complete.items() if v == variant}
        if len(seeds) > 1:
            write_seed_pool(out / variant / "cv-seeds", folds, sites, seeds)
            written.append(out / variant / "cv-seeds")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/brats_2d.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)} (JAX), "
                             f"each also as {TORCH_PREFIX}<name> (PyTorch)")
    parser.add_argument("--folds", default="0,1", help="held-out folds to run (of --k)")
    parser.add_argument("--k", type=int, default=5, help="number of folds of the site-stratified split")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--parallel", type=int, default=1, help="points at a time")
    parser.add_argument("--score-workers", type=int, default=0,
                        help="each point's learning-curve --score-workers (processes scoring its held-out subjects)")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="seconds from now")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override for every point (before the variant's own)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if lever(v) not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}")
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.deadline
    order = [(int(f), int(s)) for f in args.folds.split(",") for s in args.seeds.split(",")]
    queue = [(v, f, s) for f, s in order for v in variants if not margins(point_dir(args.out, v, f, s))]

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(args.out / "progress.log", "a") as f:
            f.write(line + "\n")

    running: dict[tuple[str, int, int], tuple[subprocess.Popen, float]] = {}
    durations: list[float] = []
    while queue or running:
        for key, (proc, started) in list(running.items()):
            if proc.poll() is not None:
                seconds = time.time() - started
                durations.append(seconds)
                (point_dir(args.out, *key) / "timing.json").write_text(json.dumps({"seconds": seconds, "rc": proc.returncode}))
                log(f"done {key} rc={proc.returncode} {seconds:.0f}s")
                del running[key]
                write_table(args.out, variants)
        while queue and len(running) < args.parallel:
            key = queue.pop(0)
            if time.time() + max(durations, default=0) > deadline:
                log(f"skip {key}: predicted to end past the deadline")
                continue
            where = point_dir(args.out, *key)
            where.mkdir(parents=True, exist_ok=True)
            command = point_command(args, *key)
            with open(where / "point.log", "a") as sink:
                running[key] = (subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                                 env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")),
                                time.time())
            log(f"start {key}: {' '.join(command[1:])}")
        if time.time() > deadline:
            for key, (proc, _) in running.items():
                proc.kill()
                log(f"stopped {key} at the deadline")
            break
        time.sleep(POLL_SECONDS)
    write_table(args.out, variants)
    write_cross_validations(args.out, args.config, variants, args.k)


if __name__ == "__main__":
    main()
