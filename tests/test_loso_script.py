"""benchmarks/loso_real_pairs.py: a fold that fails with a one-line error (a normalization that
refuses the held-out subject, as WhiteStripe does on TCGA-DU-7294's T1) is reported and the other
folds still run, instead of the whole sweep dying after hours of training."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import loso_real_pairs as loso  # noqa: E402

from mrsynth.errors import DataError  # noqa: E402


def fake_fold(config, root, held_out, subjects, overrides, backends, out):
    if held_out == "B":
        raise DataError("B/t1.nii.gz: data.normalization=whitestripe: no white-matter mode")
    rows = [{"held_out": held_out, "method": "jax", "kind": "run", "report": "r",
             **{k: 1.0 for k in loso.COLUMNS}, "margin_psnr_z": 0.5}]
    return rows, {"jax": [1.0]}


@pytest.fixture(autouse=True)
def no_training(tmp_path, monkeypatch):
    """Folds come from fake_fold: no subjects prepared, nothing trained."""
    monkeypatch.setattr(loso, "prepare_subjects", lambda out, shared: tmp_path / "subjects")
    monkeypatch.setattr(loso, "run_fold", fake_fold)


def test_a_failing_fold_is_listed_and_the_others_still_run(tmp_path, capsys):
    status = loso.main(["--out", str(tmp_path), "--backends", "jax", "--subjects", "A", "B", "C"])
    assert status == 1
    report = json.loads((tmp_path / "loso.json").read_text())
    assert [r["held_out"] for r in report["rows"]] == ["A", "C"]
    assert report["failed"] == [{"variant": "plain", "held_out": "B",
                                 "error": "B/t1.nii.gz: data.normalization=whitestripe: no white-matter mode"}]
    text = (tmp_path / "loso.md").read_text()
    assert "## Folds that could not be run" in text and "no white-matter mode" in text
    assert "error: plain / B: B/t1.nii.gz" in capsys.readouterr().err


def test_a_sweep_without_failures_exits_0_and_has_no_failure_section(tmp_path):
    assert loso.main(["--out", str(tmp_path), "--backends", "jax", "--subjects", "A", "C"]) == 0
    assert "could not be run" not in (tmp_path / "loso.md").read_text()


def test_a_sweep_whose_every_fold_fails_says_so_instead_of_an_empty_table(tmp_path):
    assert loso.main(["--out", str(tmp_path), "--backends", "jax", "--subjects", "B"]) == 1
    text = (tmp_path / "loso.md").read_text()
    assert "No fold could be run." in text and "| variant | held out | method |" not in text
