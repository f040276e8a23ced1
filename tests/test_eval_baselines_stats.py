"""Baselines recover known intensity maps; summaries and paired tests match scipy by hand."""
from __future__ import annotations

import math
import weakref
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from mrsynth.data.io import Geometry
from mrsynth.data.preprocess import NormStats, Volume
from mrsynth.evaluation.baselines import (HistogramBaseline, IdentityBaseline, LinearBaseline, fit_baselines,
                                         pool_training)
from mrsynth.evaluation.metrics import metric_bounds
from mrsynth.evaluation.stats import paired_test, summarize


def _volume(seed: int, t2_of_t1, shape=(12, 14, 10)) -> Volume:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 3:-3, 2:-2] = 1
    t1 = (rng.normal(size=shape) * mask).astype(np.float32)
    t2 = (t2_of_t1(t1) * mask).astype(np.float32)
    geometry = Geometry(affine=np.eye(4), shape=shape, header=b"")
    return Volume(f"S{seed}", t1, t2, mask, None, NormStats(0, 1), NormStats(0, 1), geometry)


def test_linear_baseline_recovers_an_inverting_map():
    train = [_volume(s, lambda x: -x + 3.0) for s in range(3)]
    model = LinearBaseline().fit(pool_training(train))
    assert model.slope == pytest.approx(-1.0) and model.intercept == pytest.approx(3.0)
    test = _volume(7, lambda x: -x + 3.0)
    np.testing.assert_allclose(model.predict(test), test.t2, atol=1e-5)  # background 0 = training background


def test_histogram_baseline_inverts_ranks_when_training_contrast_is_inverted():
    train = [_volume(s, lambda x: -2.0 * x + 1.0) for s in range(3)]
    model = HistogramBaseline().fit(pool_training(train))
    assert model.inverted
    test = _volume(9, lambda x: -2.0 * x + 1.0)
    pred = model.predict(test)
    inside = test.mask > 0
    # monotone decreasing in T1 inside the mask, exactly the training background outside
    assert sps.spearmanr(pred[inside], test.t1[inside]).statistic == pytest.approx(-1.0)
    assert np.all(pred[~inside] == 0)
    # same distribution (up to sampling noise of ~1000 voxels) -> close values
    assert np.abs(pred[inside] - test.t2[inside]).mean() < 0.1 * test.t2[inside].std()
    straight = HistogramBaseline().fit(pool_training([_volume(s, lambda x: np.exp(x)) for s in range(3)]))
    assert not straight.inverted


def test_identity_and_registry():
    vol = _volume(1, lambda x: -x)
    np.testing.assert_array_equal(IdentityBaseline().predict(vol), vol.t1)
    fitted = fit_baselines([vol])
    assert list(fitted) == ["identity", "linear", "histmatch"]
    assert all(fitted[k].predict(vol).shape == vol.t1.shape for k in fitted)


def test_baselines_fit_on_volumes_streamed_one_at_a_time_as_on_the_pooled_voxels():
    """A generator of volumes is read once, each volume released before the one after the next is
    loaded, and the fit is the float64 fit of all their voxels (what a list of volumes gave)."""
    alive: list[weakref.ref] = []

    def stream():
        for seed in range(4):
            assert sum(ref() is not None for ref in alive) <= 1, "earlier volumes are still held"
            vol = _volume(seed, lambda x: -0.7 * x + 0.2 + 0.1 * x ** 2)
            vol.t2[vol.mask == 0] = seed  # a background that differs per subject
            alive.append(weakref.ref(vol))
            yield vol
            del vol

    fitted = fit_baselines(stream())
    volumes = [_volume(seed, lambda x: -0.7 * x + 0.2 + 0.1 * x ** 2) for seed in range(4)]
    inside = [v.mask > 0 for v in volumes]
    t1 = np.concatenate([v.t1[m].astype(np.float64) for v, m in zip(volumes, inside)])
    t2 = np.concatenate([v.t2[m].astype(np.float64) for v, m in zip(volumes, inside)])
    slope, intercept = np.polyfit(t1, t2, 1)
    assert (fitted["linear"].slope, fitted["linear"].intercept) == (slope, intercept)
    np.testing.assert_array_equal(fitted["histmatch"].quantiles, np.quantile(t2, np.linspace(0, 1, 1001)))
    outside = [np.full(int((~m).sum()), seed, np.float64) for seed, m in enumerate(inside)]
    assert fitted["linear"].background == pytest.approx(np.concatenate(outside).mean(), rel=1e-12)
    assert fitted["histmatch"].background == fitted["linear"].background


def test_a_runs_baselines_fit_on_its_training_subjects_evenly_spaced_beyond_the_cap(monkeypatch):
    from mrsynth.config import DataConfig
    from mrsynth.data import preprocess
    from mrsynth.data.discovery import SubjectFiles
    from mrsynth.evaluation import runner

    loaded = []

    def load(files, cfg):
        loaded.append(files.subject)
        return _volume(len(loaded), lambda x: -x)

    monkeypatch.setattr(preprocess, "load_volume", load)
    files = [SubjectFiles(f"S{i}", Path(f"S{i}_t1.nii"), Path(f"S{i}_t2.nii")) for i in range(7)]
    assert set(runner.fit_training_baselines(files, DataConfig())) == {"identity", "linear", "histmatch"}
    assert loaded == [f"S{i}" for i in range(7)]  # all of them, up to the cap
    loaded.clear()
    monkeypatch.setattr(runner, "BASELINE_MAX_TRAIN", 3)
    runner.fit_training_baselines(files, DataConfig())
    assert loaded == ["S0", "S3", "S6"]  # not the first three by id


def test_summary_matches_t_interval_from_ten_subjects():
    values = [1.0, 2.0, 4.0, 7.0, 3.0, 5.0, 2.5, 6.0, 1.5, 4.5]
    s = summarize(values + [math.inf, math.nan])
    assert s["n"] == 10 and s["mean"] == pytest.approx(np.mean(values)) and s["ci_method"] == "t"
    assert s["sd"] == pytest.approx(np.std(values, ddof=1))
    lo, hi = sps.t.interval(0.95, 9, loc=np.mean(values), scale=sps.sem(values))
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    one = summarize([2.0])
    assert one["mean"] == 2.0 and math.isnan(one["sd"]) and math.isnan(one["ci_low"]) and one["ci_method"] == ""


def test_few_subjects_get_a_bootstrap_interval_inside_the_metric_range():
    """Two test subjects: the t interval would put SSIM above 1 and MAE below 0."""
    ssim = summarize([0.85, 0.99], metric_bounds("ssim"))
    assert ssim["ci_method"] == "bootstrap" and (ssim["ci_low"], ssim["ci_high"]) == (0.85, 0.99)
    t_half = sps.t.ppf(0.975, 1) * np.std([0.85, 0.99], ddof=1) / math.sqrt(2)
    assert 0.92 + t_half > 1  # what the t interval said
    mae = summarize([0.02, 0.3, 0.05, 0.04], metric_bounds("mae"))
    assert 0.02 <= mae["ci_low"] < mae["mean"] < mae["ci_high"] <= 0.3
    assert summarize([0.5, 0.6, 0.55], metric_bounds("pearson")) == summarize([0.5, 0.6, 0.55], (-1, 1))  # seeded


def test_t_intervals_are_clipped_to_the_metric_range():
    ssim = summarize([1.0] * 9 + [0.4], metric_bounds("ssim"))
    assert ssim["ci_method"] == "t" and ssim["ci_high"] == 1.0 and ssim["ci_low"] < ssim["mean"]
    mae = summarize([0.0] * 9 + [0.5], metric_bounds("mae_white_matter"))
    assert mae["ci_low"] == 0.0
    psnr = summarize([20.0] * 9 + [60.0], metric_bounds("psnr"))
    assert psnr["ci_low"] < 20.0  # PSNR has no bound
    assert metric_bounds("pearson") == (-1.0, 1.0) and metric_bounds("nrmse") == (0.0, math.inf)


def test_paired_tests_and_degenerate_cases():
    a = [0.9, 0.8, 0.85, 0.95, 0.7]
    b = [0.7, 0.75, 0.6, 0.9, 0.65]
    r = paired_test(a, b)
    assert r["n"] == 5 and r["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert r["p_t"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r["p_w"] == pytest.approx(sps.wilcoxon(np.subtract(a, b)).pvalue)
    single = paired_test([1.0], [0.5])
    assert math.isnan(single["p_t"]) and "n < 2" in single["note"] and single["mean_diff"] == 0.5
    same = paired_test(a, a)
    assert math.isnan(same["p_w"]) and same["note"]
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 2.0])
