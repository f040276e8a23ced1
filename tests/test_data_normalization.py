"""The standard MR normalizations (intensity-normalization package): what each standardizes, the
refusals of fits that cannot standardize, and nyul's standard scale from training to predict."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mrsynth.cli import main
from mrsynth.config import DataConfig
from mrsynth.data.contract import PreprocessingContract, build_contract, read_contract
from mrsynth.data.discovery import SubjectFiles, discover_pairs
from mrsynth.data.io import Geometry, read_nifti
from mrsynth.data.normalization import FCM_SEED, NormStats, normalize_subject, nyul_percentiles
from mrsynth.data.preprocess import (Volume, fit_training_normalization, load_t1_only, preprocess,
                                     preprocessing_settings)
from mrsynth.errors import DataError, MrsynthError

AFFINE_METHODS = ("fcm", "kde", "whitestripe")


def three_tissue_head(noise: float, seed: int = 0, shape: tuple[int, int, int] = (32, 36, 28)) -> dict[str, np.ndarray]:
    """A brain of white matter (about half), grey matter and a CSF rim with Gaussian tissue noise:
    T1 100 / 60 / 20, T2 40 / 80 / 160 (WM is the brightest T1 tissue and the darkest T2 one)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(axis=0))
    mask = radius < 0.9
    wm, csf = radius < 0.7, radius >= 0.85
    t1 = np.where(wm, 100.0, np.where(csf, 20.0, 60.0)) + rng.normal(0, noise, shape)
    t2 = np.where(wm, 40.0, np.where(csf, 160.0, 80.0)) + rng.normal(0, noise, shape)
    return {"t1": (t1 * mask).astype(np.float32), "t2": (t2 * mask).astype(np.float32), "mask": mask, "wm": wm}


def _normalize(head: dict[str, np.ndarray], method: str, gain: float = 1.0):
    return normalize_subject(gain * head["t1"], gain * head["t2"], head["mask"], DataConfig(normalization=method),
                             "t1.nii", "t2.nii")


@pytest.mark.parametrize("method", AFFINE_METHODS)
def test_white_matter_lands_on_the_method_reference_whatever_the_scanner_gain(method):
    head = three_tissue_head(noise=10.0)
    t1, t2 = _normalize(head, method)
    reference = 0.0 if method == "whitestripe" else 1.0  # N(0, 1) stripe, or WM -> 1
    # stripe SDs; fcm's fuzzy memberships weigh in some grey matter; kde's mode is the WM peak
    tolerance = {"whitestripe": 1.0, "fcm": 0.08, "kde": 0.03}[method]
    for normalized, raw in ((t1, head["t1"]), (t2, head["t2"])):
        assert abs(float(normalized.values[head["wm"]].mean()) - reference) < tolerance
        np.testing.assert_allclose(normalized.stats.denormalize(normalized.values), raw, rtol=1e-5, atol=1e-3)
    # Another scanner's gain changes nothing (the KDE's bandwidth must scale with the data).
    t1_gain, t2_gain = _normalize(head, method, gain=3.7)
    np.testing.assert_allclose(t1_gain.values, t1.values, atol=2e-3)
    np.testing.assert_allclose(t2_gain.values, t2.values, atol=2e-3)


def test_fcm_is_the_package_transform_with_the_t1_white_matter():
    from intensity_normalization import FCMNormalizer, create_image

    head = three_tissue_head(noise=10.0)
    inside = head["mask"]
    state = np.random.get_state()
    t1, t2 = _normalize(head, "fcm")
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state))  # caller's generator untouched
    np.random.seed(FCM_SEED)
    package = FCMNormalizer().fit(create_image(head["t1"]), create_image(inside.astype(np.float32)))
    for ours, raw in ((t1, head["t1"]), (t2, head["t2"])):
        expected = package.transform(create_image(raw)).get_data()
        np.testing.assert_allclose(ours.values[inside], expected[inside], rtol=1e-4)
    assert np.array_equal(_normalize(head, "fcm")[1].values, t2.values)


def test_a_white_stripe_too_narrow_for_the_brain_is_refused():
    head = three_tissue_head(noise=2.0)  # a spike of a WM peak: the brain spans over 100 stripe SDs
    with pytest.raises(DataError) as info:
        _normalize(head, "whitestripe")
    message = str(info.value)
    assert message.startswith("t1.nii: data.normalization=whitestripe: the white stripe's SD ")
    assert message.endswith("; use zscore") and "\n" not in message


@pytest.mark.parametrize("method", ["kde", "whitestripe"])
def test_a_t2_mode_brighter_than_most_of_the_brain_is_not_white_matter(method):
    rng = np.random.default_rng(0)
    shape = (24, 24, 24)
    bright = rng.random(shape) < 0.6  # a "T2" whose largest tissue is bright, like CSF
    t2 = np.where(bright, 160.0, 40.0) + rng.normal(0, 8.0, shape)
    cfg = DataConfig(normalization=method)
    with pytest.raises(DataError, match=rf"t2.nii: data.normalization={method}: the white-matter mode found "
                                        r"\(.*\) is not below the brain's median .* on a T2, so it is another "
                                        "tissue's mode; use zscore"):
        normalize_subject(three_tissue_head(10.0, shape=shape)["t1"], t2.astype(np.float32),
                          np.ones(shape, bool), cfg, "t1.nii", "t2.nii")


def test_whitestripe_on_the_phantom_refuses_to_train(tmp_path, capsys):
    overrides = ["data.normalization=whitestripe", f"data.root={tmp_path / 'phantom'}", "data.phantom_subjects=3",
                 "data.phantom_shape=[64,72,56]", "data.patch_size=[64,64]", f"data.cache_dir={tmp_path / 'cache'}"]
    code = main(["train", "--backend", "jax", "--run-dir", str(tmp_path / "run"),
                 *[a for o in overrides for a in ("--set", o)]])
    lines = capsys.readouterr().err.strip().splitlines()  # info lines (phantom generation) may come first
    lines = [line for line in lines if line.startswith("error:")] if lines[-1].startswith("error:") else lines
    assert code != 0 and len(lines) == 1
    assert "-T1.nii.gz: data.normalization=whitestripe: the white stripe's SD" in lines[0]
    assert lines[0].startswith("error: ") and lines[0].endswith("; use zscore")


@pytest.fixture
def nyul_subjects(ixi_head_dir):
    cfg = DataConfig(source="ixi", root=str(ixi_head_dir(3)), normalization="nyul", mask="given", cache_dir="")
    pairs = discover_pairs(cfg)
    return fit_training_normalization(cfg, pairs[:2]), pairs


def test_nyul_learns_a_standard_scale_and_matches_each_volume_onto_it(nyul_subjects):
    fitted, pairs = nyul_subjects
    for scale in (fitted.nyul_t1_landmarks, fitted.nyul_t2_landmarks):
        assert len(scale) == 11 and all(b > a for a, b in zip(scale, scale[1:]))
        assert scale[0] == pytest.approx(0.0, abs=1e-6) and scale[-1] == pytest.approx(1.0, abs=1e-6)
    volume = preprocess(pairs[2], fitted)  # not a training subject
    inside = volume.mask > 0
    where = nyul_percentiles(fitted.percentiles)
    np.testing.assert_allclose(np.percentile(volume.t1[inside], where), fitted.nyul_t1_landmarks, atol=2e-3)
    np.testing.assert_allclose(np.percentile(volume.t2[inside], where), fitted.nyul_t2_landmarks, atol=2e-3)
    assert fit_training_normalization(fitted, pairs) is fitted  # a given scale is kept
    other = dataclasses.replace(fitted, nyul_t1_landmarks=tuple(np.linspace(0, 1, 11)))
    assert preprocessing_settings(other) != preprocessing_settings(fitted)  # a new cache entry
    assert set(preprocessing_settings(DataConfig())) == {"mask", "normalization", "percentiles"}


def test_nyul_scale_travels_in_the_contract_to_t1_only_inputs(nyul_subjects):
    fitted, pairs = nyul_subjects
    contract = build_contract(fitted, pairs[:2], [preprocess(p, fitted) for p in pairs[:2]], {})
    again = PreprocessingContract.from_json(json.loads(json.dumps(contract.to_json())), "preprocessing.json")
    assert again == contract and again.nyul_t2_landmarks == fitted.nyul_t2_landmarks
    base = DataConfig(source="ixi", root=fitted.root, cache_dir="")  # a config as predict rebuilds it
    t1_only = load_t1_only(pairs[2].t1, again.data_config(base), mask=pairs[2].mask)
    np.testing.assert_array_equal(t1_only.t1, preprocess(pairs[2], fitted).t1)
    raw = {k: v for k, v in contract.to_json().items() if not k.startswith("nyul_")}
    with pytest.raises(MrsynthError, match="nyul without its standard scales"):
        PreprocessingContract.from_json(raw, "preprocessing.json")
    with pytest.raises(DataError, match="data.normalization=nyul: no standard scale"):
        load_t1_only(pairs[2].t1, dataclasses.replace(again.data_config(base), nyul_t1_landmarks=()),
                     mask=pairs[2].mask)


def test_nyul_refuses_tied_landmarks():
    head = three_tissue_head(noise=10.0)
    t1 = head["t1"].copy()
    t1[head["mask"] & (head["t1"] < 70)] = 50.0  # every non-WM voxel one value: percentiles 1..30 tie
    cfg = DataConfig(normalization="nyul", nyul_t1_landmarks=tuple(np.linspace(0, 1, 11)),
                     nyul_t2_landmarks=tuple(np.linspace(0, 1, 11)))
    with pytest.raises(DataError, match=r"t1.nii: data.normalization=nyul: the intensities at percentiles 1 and 10 "
                                        r"are both 50 .*; use zscore"):
        normalize_subject(t1, head["t2"], head["mask"], cfg, "t1.nii", "t2.nii")


@pytest.mark.slow
def test_a_nyul_run_predicts_what_evaluate_scores(tmp_path):
    """Training learns the scales, evaluate and predict apply the stored ones: predict's output is
    evaluate's synthesized volume in the T2 reference's units."""
    # the phantom, model, patch and optimizer of tests/test_cross_validation.py's runs: the same
    # compiled train step and predictor (the schedule, hence train.steps, is part of the step)
    overrides = ["data.normalization=nyul", f"data.root={tmp_path / 'phantom'}", "data.phantom_subjects=4",
                 "data.phantom_shape=[48,56,40]", "data.patch_size=[48,56]", "data.split_fractions=[0.5,0.25,0.25]",
                 f"data.cache_dir={tmp_path / 'cache'}", "model.depth=2", "model.base_channels=8",
                 "model.channel_mults=[1,2,4]", "model.groups=2", "train.steps=20", "train.batch_size=4",
                 "train.warmup_steps=1", "train.val_every=20", "train.ckpt_every=20", "train.log_every=10"]
    run = tmp_path / "run"
    assert main(["train", "--backend", "jax", "--run-dir", str(run), *[a for o in overrides for a in ("--set", o)]]) == 0
    contract = read_contract(run)
    assert len(contract.nyul_t1_landmarks) == 11 and len(contract.nyul_t2_landmarks) == 11
    assert main(["evaluate", "--checkpoint", str(run), "--out", str(tmp_path / "eval")]) == 0
    subject = contract.subjects["test"][0]
    t1 = next((tmp_path / "phantom").glob(f"{subject}*-T1.nii.gz"))
    mask = next((tmp_path / "phantom").glob(f"{subject}*-mask.nii.gz"))
    assert main(["predict", "--checkpoint", str(run), "--input", str(t1), "--mask", str(mask),
                 "--out", str(tmp_path / "pred")]) == 0
    evaluated, _ = read_nifti(next((tmp_path / "eval" / "nifti").glob(f"{subject}*_T2.nii.gz")))
    predicted, _ = read_nifti(next((tmp_path / "pred").glob("*synthT2.nii.gz")))
    inside = evaluated != 0
    reference = contract.t2_reference
    np.testing.assert_allclose(predicted[inside], reference.denormalize(evaluated[inside]), rtol=1e-4, atol=1e-2)


def contract_of(raw: dict[str, np.ndarray], stats: dict[str, NormStats]) -> tuple[PreprocessingContract, list[Volume]]:
    """The contract that training subjects of three voxels each (``raw`` T2 = T1, normalized
    with ``stats``) would give, and their volumes."""
    grid = Geometry(affine=np.diag([2.0, 2.0, 3.0, 1.0]), shape=(3, 1, 1), header=b"")
    volumes = [Volume(name, raw[name], stats[name].normalize(raw[name]), np.ones(3), None, stats[name], stats[name],
                      grid) for name in raw]
    files = [SubjectFiles(name, Path(f"{name}_t1.nii"), Path(f"{name}_t2.nii")) for name in raw]
    return build_contract(DataConfig(mask="nonzero"), files, volumes, {}), volumes


def test_the_clip_range_never_maps_outside_the_training_t2s():
    """Two subjects normalized with different offset-to-scale ratios: subject A's normalized
    minimum maps, through the mean reference, to a negative T2; the contract's range stops at
    the lowest training T2 in output units."""
    contract, volumes = contract_of({"A": np.array([0.0, 500.0, 1000.0]), "B": np.array([0.0, 100.0, 300.0])},
                                    {"A": NormStats(offset=500.0, scale=200.0), "B": NormStats(offset=100.0, scale=100.0)})
    reference = contract.t2_reference
    assert (reference.offset, reference.scale) == (300.0, 150.0)
    lo, hi = contract.output_range()
    assert lo == pytest.approx(0.0, abs=1e-4)  # raw 0: narrowed from A's normalized minimum, -2.5
    assert hi == pytest.approx(2.5 * 150 + 300)  # A's normalized maximum, inside the raw range: kept
    assert contract.voxel_size == (2.0, 2.0, 3.0) and contract.mask_extent == "brain"  # nonzero: brains
    normalized_min = min(float(v.t2.min()) for v in volumes)
    assert normalized_min * reference.scale + reference.offset < -50  # what the old range let through


def test_a_synthesis_at_the_floor_of_a_cohort_run_is_not_negative():
    """A cohort run's T2 reference and range (offset 780.4, scale 292.4; the training T2s' floor
    0 came back through float32 normalized values as -8.5e-5): the output floor is 0, and the
    network's output clipped to the normalized floor maps to 0 exactly (mapped in float32 it gave
    -6.1e-5, a negative T2). A floor well below 0 is kept."""
    reference = NormStats(offset=780.4091546499515, scale=292.4151233974672)
    contract, _ = contract_of({"A": np.array([0.0, 780.0, 3351.0])}, {"A": reference})
    contract = dataclasses.replace(contract, t2_reference=reference, t2_range=(-2.6688402123957635, 8.794034004211426))
    assert -2.6688402123957635 * reference.scale + reference.offset < -8e-5
    assert contract.output_range() == (0.0, pytest.approx(8.794034004211426 * reference.scale + reference.offset))
    network = np.full((4, 4, 2), np.float32(-2.6688402123957635), dtype=np.float32)
    network[0, 0, 0] = np.float32(9.0)  # above the range: clipped to its top
    inside = np.ones(network.shape, dtype=bool)
    inside[3] = False
    assert (network * reference.scale + reference.offset).min() < -6e-5  # the old float32 mapping
    out = contract.to_output_units(network, inside)
    assert out.dtype == np.float32 and np.all(out[~inside] == 0) and out[inside].min() == 0.0
    assert out.max() == np.float32(contract.output_range()[1])
    below = dataclasses.replace(contract, t2_range=(-2.7, 8.79))  # a floor of -9.2: a real one, kept
    assert below.output_range()[0] == pytest.approx(-2.7 * reference.scale + reference.offset)
    assert below.to_output_units(np.full(2, -3.0, dtype=np.float32), np.ones(2, bool)).min() < -9