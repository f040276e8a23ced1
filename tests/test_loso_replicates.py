"""benchmarks/loso_replicates.py and the sign-flip test: the backend gap is tested over runs, not
slices, and set against the gap between two seeds of one backend."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from mrsynth.evaluation.stats import sign_flip_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import loso_replicates as reps  # noqa: E402


def test_sign_flip_is_exact_for_few_pairs_and_monte_carlo_above():
    assert sign_flip_test([1.0, 2.0, 3.0, 4.0, 5.0])["p"] == pytest.approx(2 / 32)  # only all-+ and all--
    assert sign_flip_test([1.0, -1.0, 1.0, -1.0])["p"] == 1.0
    assert sign_flip_test([0.3, -0.1, 0.2])["p"] == pytest.approx(4 / 8)  # |mean| >= 0.133: +++, +-+, and negations
    many = sign_flip_test([0.2] * 20)
    assert 0 < many["p"] < 1e-3  # Monte Carlo, the observed signs counted once
    one = sign_flip_test([0.5])
    assert one["n"] == 1 and math.isnan(one["p"])  # no test from one pair


def fold_rows(variant: str, fold: str, jax: float, torch: float, *, with_torch: bool = True) -> list[dict]:
    runs = [("jax", jax)] + ([("torch", torch)] if with_torch else [])
    rows = [{"variant": variant, "held_out": fold, "method": m, "kind": "run", "psnr_z": v, "ssim_z": v / 100}
            for m, v in runs]
    rows += [{"variant": variant, "held_out": fold, "method": "linear", "kind": "baseline", "psnr_z": 18.0,
              "ssim_z": 0.30},
             {"variant": variant, "held_out": fold, "method": "histmatch", "kind": "baseline", "psnr_z": 17.0,
              "ssim_z": 0.35}]
    return rows


@pytest.fixture
def sweep(tmp_path) -> list[Path]:
    """Two files: seed 0 (folds A, B) and seeds 1, 2 (fold A; fold B's seed 2 lacks its PyTorch run)."""
    first = {"rows": fold_rows("s0", "A", 20.0, 19.5) + fold_rows("s0", "B", 21.0, 21.2),
             "backend_tests": [{"variant": "s0", "fold": "A", "mean_diff": 0.4},
                               {"variant": "s0", "fold": "B", "mean_diff": -0.1}]}
    second = {"rows": fold_rows("s1", "A", 19.0, 19.1) + fold_rows("s2", "A", 20.5, 20.0)
              + fold_rows("s2", "B", 22.0, 0.0, with_torch=False),
              "backend_tests": [{"variant": "s1", "fold": "A", "mean_diff": -0.2},
                                {"variant": "s2", "fold": "A", "mean_diff": 0.6}]}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, payload in zip(paths, (first, second)):
        path.write_text(json.dumps(payload))
    return paths


def test_replicates_pair_the_backends_of_each_fold_and_seed(sweep):
    found = reps.replicates(sweep)
    assert [(r["replicate"], r["held_out"]) for r in found] == [("s0", "A"), ("s0", "B"), ("s1", "A"), ("s2", "A")]
    assert found[0]["best_baseline_psnr_z"] == 18.0 and found[0]["best_baseline_ssim_z"] == 0.35  # best per metric
    assert [r["slice_mean_diff"] for r in found] == [0.4, -0.1, -0.2, 0.6]


def test_seed_noise_compares_seeds_within_a_backend_and_fold(sweep):
    noise = reps.seed_noise(reps.replicates(sweep))
    # fold A, JAX 20.0 / 19.0 / 20.5 and PyTorch 19.5 / 19.1 / 20.0: 3 + 3 seed pairs; fold B one seed
    assert noise["same backend, two seeds"]["n"] == 6
    assert noise["same backend, two seeds"]["max_abs"] == pytest.approx(1.5)
    assert noise["same backend, two seeds"]["mean_abs"] == pytest.approx((1.0 + 0.5 + 1.5 + 0.4 + 0.5 + 0.9) / 6)
    assert noise["same seed, two backends"]["mean_abs"] == pytest.approx((0.5 + 0.2 + 0.1 + 0.5) / 4)


def test_margins_and_the_gap_test_over_runs(sweep):
    found = reps.replicates(sweep)
    spans = {(s["held_out"], s["backend"]): s for s in reps.margins(found)}
    assert spans[("A", "jax")]["psnr_z_margin_min"] == pytest.approx(1.0)
    assert spans[("A", "jax")]["psnr_z_margin_max"] == pytest.approx(2.5)
    assert spans[("A", "torch")]["ssim_z_margin_mean"] == pytest.approx((0.195 + 0.191 + 0.200) / 3 - 0.35)
    flip = next(g for g in reps.backend_gap(found) if "p_flip" in g)
    assert flip["n"] == 4 and flip["mean_diff"] == pytest.approx(0.175)
    assert flip["p_flip"] == sign_flip_test([0.4, -0.1, -0.2, 0.6])["p"]
    assert -0.2 <= flip["ci_low"] < flip["mean_diff"] < flip["ci_high"] <= 0.6  # bootstrap: inside the values


def test_the_report_is_written_and_bad_input_is_one_line(sweep, tmp_path, capsys):
    assert reps.main(["--out", str(tmp_path / "out"), *map(str, sweep)]) == 0
    text = (tmp_path / "out" / "replicates.md").read_text()
    assert "With 4 pairs the smallest p it can give is 0.125." in text
    assert json.loads((tmp_path / "out" / "replicates.json").read_text())["seed_noise"]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert reps.main(["--out", str(tmp_path / "none"), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: not a loso_real_pairs.py loso.json") and "\n" not in err
    assert not (tmp_path / "none").exists()
