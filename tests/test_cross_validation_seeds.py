"""cross-validate --train-seeds: one cross-validation per training seed on the same folds, pooled
with each subject averaged over the seeds and each seed's margin over the better baseline beside it."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mrsynth.cli import main
from mrsynth.errors import MrsynthError
from mrsynth.experiments.crossval_seeds import write_seed_pool

from test_cross_validation import cv_command, phantom_manifest

SITES = {"s1": "A", "s2": "A", "s3": "B", "s4": "B"}
FOLDS = {"s1": 0, "s2": 1, "s3": 0, "s4": 1}


def fake_evaluations(root: Path, psnr: dict[str, float], identity: float = 30.0) -> dict[int, Path]:
    """Two folds' evaluation folders as evaluate writes them: jax, linear, histmatch and an identity
    whose psnr_z beats every method (it must still not count as the better baseline)."""
    folders = {}
    for fold in (0, 1):
        folder = root / f"fold-{fold}" / "eval"
        folder.mkdir(parents=True)
        lines = ["subject,method,psnr_z,ssim_z"]
        for s in sorted(x for x, f in FOLDS.items() if f == fold):
            lines += [f"{s},jax,{psnr[s]},0.40", f"{s},linear,18.0,0.30", f"{s},histmatch,17.0,0.35",
                      f"{s},identity,{identity},0.10"]
        (folder / "per_subject.csv").write_text("\n".join(lines) + "\n")
        (folder / "summary.json").write_text(json.dumps({"methods": {
            "jax": {"kind": "run"}, "linear": {"kind": "baseline"}, "histmatch": {"kind": "baseline"},
            "identity": {"kind": "baseline"}}}))
        folders[fold] = folder
    return folders


def test_seeds_are_pooled_per_subject_and_each_seed_keeps_its_own_margin(tmp_path):
    seed0 = fake_evaluations(tmp_path / "seed-0", {"s1": 20.0, "s2": 22.0, "s3": 24.0, "s4": 26.0})
    seed1 = fake_evaluations(tmp_path / "seed-1", {"s1": 21.0, "s2": 21.0, "s3": 21.0, "s4": 21.0})
    summary = write_seed_pool(tmp_path / "pooled", FOLDS, SITES, {0: seed0, 1: seed1})
    rows = {(r["subject"], r["method"]): float(r["psnr_z"])
            for r in csv.DictReader(open(tmp_path / "pooled" / "per_subject.csv"))}
    assert rows["s1", "jax"] == 20.5 and rows["s4", "jax"] == 23.5 and rows["s2", "linear"] == 18.0
    assert summary["methods"]["jax"]["psnr_z"]["mean"] == pytest.approx(22.0)
    assert summary["methods"]["jax"]["psnr_z"]["n"] == 4  # subjects, not subjects x seeds
    psnr = {seed: summary["per_seed"][seed]["psnr_z"] for seed in (0, 1)}
    assert (psnr[0]["baseline"], psnr[0]["margin"], psnr[1]["margin"]) == ("linear", 5.0, 3.0)
    assert summary["per_seed"][0]["ssim_z"]["baseline"] == "histmatch"
    assert summary["per_seed"][0]["ssim_z"]["margin"] == pytest.approx(0.05)
    text = (tmp_path / "pooled" / "summary.md").read_text()
    assert "| 0 | 23.000 | 18.000 (linear) | +5.000 |" in text and "| 1 | 21.000 | 18.000 (linear) | +3.000 |" in text
    assert "| mean over seeds | 22.000 | 18.000 | 4.000 |" in text and "| spread (max - min) | 2.000 | 0.000 | 2.000 |" in text
    assert "| B | 2 | jax |" in text
    saved = json.loads((tmp_path / "pooled" / "summary.json").read_text())
    assert saved["training_seeds"] == [0, 1] and saved["cross_validation"]["subjects"] == 4 and saved["per_seed"]["1"]["psnr_z"]["margin"] == 3.0


def test_a_seed_that_misses_a_subject_is_refused(tmp_path):
    seed0 = fake_evaluations(tmp_path / "seed-0", dict.fromkeys(SITES, 20.0))
    seed1 = fake_evaluations(tmp_path / "seed-1", dict.fromkeys(SITES, 20.0))
    per_subject = seed1[1] / "per_subject.csv"
    per_subject.write_text("".join(line for line in per_subject.read_text().splitlines(True) if not line.startswith("s4,")))
    with pytest.raises(MrsynthError, match="seed-1: the folds scored 3 subjects, expected 4"):
        write_seed_pool(tmp_path / "pooled", FOLDS, SITES, {0: seed0, 1: seed1})
    assert not (tmp_path / "pooled").exists()


@pytest.mark.slow
def test_cross_validate_with_two_training_seeds(tmp_path, capsys):
    """Two seeds x two folds of four phantom subjects, through the CLI; each seed's folder is a
    cross-validation trained with that seed, and a one-seed folder and a seeds folder refuse each
    other's calls."""
    manifest = phantom_manifest(tmp_path, subjects=4)
    out = tmp_path / "seeds"
    command = cv_command(manifest, out, 4, "[48,56]")[2:]
    capsys.readouterr()
    assert main([*command, "--train-seeds", "1,0"]) == 0
    printed = capsys.readouterr().out
    assert "each averaged over 2 training seed(s)" in printed and "seed 0: psnr_z margin" in printed
    for seed in (0, 1):
        assert json.loads((out / f"seed-{seed}" / "cv.json").read_text())["config"]["train"]["seed"] == seed
    per_seed = [{(r["subject"], r["method"]): float(r["psnr_z"])
                 for r in csv.DictReader(open(out / f"seed-{seed}" / "per_subject.csv"))} for seed in (0, 1)]
    assert per_seed[0] != per_seed[1]  # two seeds, two models
    pooled = {(r["subject"], r["method"]): float(r["psnr_z"]) for r in csv.DictReader(open(out / "per_subject.csv"))}
    assert pooled == pytest.approx({k: (per_seed[0][k] + per_seed[1][k]) / 2 for k in pooled})
    assert len(pooled) == 16 and "| mean over seeds |" in (out / "summary.md").read_text()
    assert main(command) != 0
    assert "several training seeds" in capsys.readouterr().err
    assert main(cv_command(manifest, out / "seed-0", 4, "[48,56]")[2:] + ["--train-seeds", "2"]) != 0
    assert "a cross-validation of one seed" in capsys.readouterr().err
