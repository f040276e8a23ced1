"""cross-validate: folds by subject stratified by site, every subject held out once, a killed
cross-validation continued to the same summary, and a 2-fold run on real cohort subjects (a
central block of each volume, to keep the test fast)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest

from mrsynth.cli import main
from mrsynth.errors import ConfigError
from mrsynth.evaluation.results import EvaluationResult
from mrsynth.experiments.crossval import figure_subjects, stratified_folds

ROOT = Path(__file__).resolve().parents[1]
BRATS = ROOT.parent / "shared" / "data" / "brats18"
TINY = ["data.workers=0", "model.depth=2", "model.base_channels=8", "model.channel_mults=[1,2,4]", "model.groups=2",
        "train.batch_size=4", "train.warmup_steps=1", "train.log_every=5", "train.ckpt_every=10",
        "train.val_every=1000", "data.min_foreground=0.05"]


def test_folds_hold_every_subject_out_once_and_spread_each_site():
    sites = {f"S{i:02d}": ("A" if i < 9 else "B" if i < 13 else None) for i in range(15)}
    folds = stratified_folds(sites, 5, seed=0)
    assert sorted(folds) == sorted(sites) and set(folds.values()) == set(range(5))
    sizes = [list(folds.values()).count(k) for k in range(5)]
    assert max(sizes) - min(sizes) <= 1
    site_a = [folds[s] for s, site in sites.items() if site == "A"]  # 9 subjects over 5 folds
    assert max(site_a.count(k) for k in range(5)) - min(site_a.count(k) for k in range(5)) <= 1
    assert stratified_folds(sites, 5, seed=0) == folds and stratified_folds(sites, 5, seed=1) != folds
    with pytest.raises(ConfigError, match="every fold needs one"):
        stratified_folds({"a": None, "b": None}, 3, seed=0)


def test_the_figure_shows_each_large_sites_median_subject():
    sites = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C", "d1": None}
    scores = {"a1": 20.0, "a2": 10.0, "a3": 15.0, "b1": 12.0, "b2": 11.0, "c1": 9.0, "d1": 30.0}
    rows = [{"subject": s, "method": m, "psnr_z": v + (0 if m == "jax" else -5)}
            for s, v in scores.items() for m in ("jax", "linear")]
    result = EvaluationResult(methods=["jax", "linear"], kinds={"jax": "run", "linear": "baseline"},
                              subjects=sorted(sites), rows=rows)
    assert figure_subjects(result, sites) == [("A", "a3", 15.0), ("B", "b2", 11.0), ("", "d1", 30.0)]


def phantom_manifest(home: Path, subjects: int = 6) -> Path:
    """Phantom subjects from two alternating 'sites', as a manifest (what a cohort looks like)."""
    assert main(["demo-data", "--out", str(home / "phantom"), "--subjects", str(subjects),
                 "--shape", "48", "56", "24"]) == 0
    lines = ["subject,t1,t2,site"]
    for i, t1 in enumerate(sorted((home / "phantom").glob("*-T1.nii.gz"))):
        lines.append(f"{t1.name[:6]},{t1},{str(t1).replace('-T1.', '-T2.')},{'AB'[i % 2]}")
    (home / "manifest.csv").write_text("\n".join(lines) + "\n")
    return home / "manifest.csv"


def cv_command(manifest: Path, out: Path, steps: int, patch: str) -> list[str]:
    sets = [*TINY, "data.source=manifest", f"data.manifest={manifest}", f"data.patch_size={patch}",
            f"train.steps={steps}", f"data.cache_dir={out.parent / 'cache'}"]
    return [sys.executable, str(ROOT / "run.py"), "cross-validate", "--folds", "2", "--out", str(out),
            "--no-progress", *[a for s in sets for a in ("--set", s)]]


def tables(out: Path) -> tuple[str, str]:
    return (out / "per_subject.csv").read_text(), (out / "summary.csv").read_text()


def has_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(not p.name.startswith(".") and "tmp" not in p.name for p in folder.iterdir())


@pytest.mark.slow
def test_a_killed_cross_validation_continues_to_the_same_summary(tmp_path, capsys):
    """The uninterrupted run, the resume and the refused call run in-process (the CLI's main);
    only the run that is SIGKILLed is a process of its own. Four subjects: two folds of two."""
    manifest = phantom_manifest(tmp_path, subjects=4)
    whole = tmp_path / "whole"
    capsys.readouterr()
    assert main(cv_command(manifest, whole, 20, "[48,56]")[2:]) == 0
    assert "cross-validated 4 subjects" in capsys.readouterr().out
    with open(whole / "folds.csv") as handle:
        folds = list(csv.DictReader(handle))
    assert sorted(r["subject"] for r in folds) == sorted({r["subject"] for r in folds})  # each once
    per_subject = list(csv.DictReader(open(whole / "per_subject.csv")))
    assert sorted({r["subject"] for r in per_subject}) == sorted(r["subject"] for r in folds)
    assert {r["method"] for r in per_subject} == {"jax", "linear", "histmatch", "identity"}
    summary = (whole / "summary.md").read_text()
    assert "| A | 2 | jax |" in summary and "| B | 2 | jax |" in summary
    assert (whole / "heldout_subjects.png").stat().st_size > 10_000

    killed = tmp_path / "killed"
    child = subprocess.Popen(cv_command(manifest, killed, 20, "[48,56]"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not has_checkpoint(killed / "fold-1" / "run") and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, "the cross-validation ended before fold 1 saved a checkpoint"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert (killed / "fold-0" / "eval" / "per_subject.csv").is_file() and not (killed / "summary.md").exists()
    capsys.readouterr()
    assert main(cv_command(manifest, killed, 20, "[48,56]")[2:]) == 0
    again = capsys.readouterr()
    assert "fold 0: finished earlier, kept" in again.out + again.err
    assert tables(killed) == tables(whole)
    assert main(cv_command(manifest, killed, 30, "[48,56]")[2:]) != 0
    assert "other settings (config)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (BRATS / "manifest.csv").is_file(), reason="needs ../shared/data/brats18")
def test_two_fold_cross_validation_on_four_cohort_subjects(tmp_path):
    with open(BRATS / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["site"] == "CBICA"][:2] + [r for r in rows if r["site"] == "TCIA01"][:2]
    lines = ["subject,t1,t2,site"]
    for r in chosen:  # a central block of each real volume (its own affine kept): the same path, a twentieth of the voxels
        paths = {}
        for role in ("t1", "t2"):
            paths[role] = tmp_path / f"{r['subject']}_{role}.nii.gz"
            nib.save(nib.load(str(BRATS / r[role])).slicer[60:180, 60:180, 62:90], str(paths[role]))
        lines.append(f"{r['subject']},{paths['t1']},{paths['t2']},{r['site']}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cv"
    command = cv_command(manifest, out, 6, "[64,64]")[2:]  # the CLI's main, in-process
    command[command.index("--out"):command.index("--out")] = ["--config", str(ROOT / "configs" / "brats_2d.yaml")]
    assert main(command) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subjects"] == sorted(r["subject"] for r in chosen)
    assert summary["cross_validation"]["per_site"] == {"CBICA": 2, "TCIA01": 2}
    folds = {r["subject"]: r["fold"] for r in csv.DictReader(open(out / "folds.csv"))}
    assert sorted(folds.values()) == ["0", "0", "1", "1"]
    assert {folds[r["subject"]] for r in chosen[:2]} == {"0", "1"}  # each site spread over both folds
    assert summary["methods"]["jax"]["metrics"]["psnr_z"]["n"] == 4
