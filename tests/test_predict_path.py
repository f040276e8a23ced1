"""The T1-only path: `predict` on raw T1s delivers what `evaluate` reports, with a trustworthy output.

One tiny JAX run on phantom subjects with brain masks (trained once per module), then: the
refusal without a brain mask, predict with --mask (file and folder) scored against the real T2
within 0.5 dB of evaluate's PSNR on the same held-out subjects, the output bounded by the
training T2, header and sidecar provenance, TTA with its spread map, umask permissions, and
commands run from another directory. A second tiny run, trained on masks made by brain
extraction (as `prepare-ixi --skull-strip` writes them), shows predict --skull-strip matching
evaluate the same way.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrsynth.cli import main
from mrsynth.config import load_config
from mrsynth.data.contract import read_contract
from mrsynth.subjects import subject_splits
from mrsynth.data.io import read_nifti, write_like
from mrsynth.evaluation.score_files import score_prediction
from mrsynth.fileio import sha256_of
from mrsynth.errors import MrsynthError
from mrsynth.inference.synthesis import find_mask, resolve_mask_policy, subject_id, tensors_sha256
from mrsynth.weights import load_portable

PSNR_GAP_DB = 0.5  # the acceptance bound between predict and evaluate


def tiny_sets(tmp: Path) -> list[str]:
    overrides = [
        "data.root=phantom", "data.cache_dir=cache",  # relative on purpose: resolved at training
        "data.phantom_subjects=5", "data.phantom_shape=[96,112,80]", "data.patch_size=[48,56]",
        "data.split_fractions=[0.6,0.2,0.2]",
        "model.depth=2", "model.base_channels=8", "model.channel_mults=[1,2,4]", "model.groups=2",
        "train.steps=40", "train.batch_size=8", "train.warmup_steps=4", "train.lr=3e-3", "train.log_every=20",
        "train.val_every=40", "train.ckpt_every=40", "run.root=runs",
    ]
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run dir, config, held-out subject files), trained from a folder that tests then leave."""
    home = tmp_path_factory.mktemp("train_home")
    cwd = os.getcwd()
    os.chdir(home)
    try:
        assert main(["train", "--backend", "jax", "--run-dir", "run", *tiny_sets(home)]) == 0
    finally:
        os.chdir(cwd)
    run = home / "run"
    cfg = load_config(run / "config.yaml")
    return run, cfg, subject_splits(cfg.data)["test"]


def evaluate_psnr(run: Path, out: Path, *extra: str) -> dict[str, float]:
    assert main(["evaluate", "--checkpoint", str(run), "--out", str(out), *extra]) == 0
    with open(out / "per_subject.csv") as handle:
        return {r["subject"]: float(r["psnr"]) for r in csv.DictReader(handle) if r["method"] == "jax"}


def predict_scores(run: Path, cfg, subjects, out: Path, mask_args) -> dict[str, dict[str, float]]:
    ref = read_contract(run).t2_reference
    scores = {}
    for files in subjects:
        assert main(["predict", "--checkpoint", str(run), "--input", str(files.t1), "--out", str(out),
                     *mask_args(files)]) == 0
        pred = out / files.t1.name.replace(".nii.gz", "_synthT2.nii.gz")
        synthesized_in = out / files.t1.name.replace(".nii.gz", "_synthT2_mask.nii.gz")
        scores[files.subject] = score_prediction(pred, files.t2, files.mask, ref, cfg.data,
                                                 synthesized_in=synthesized_in)
    return scores


def test_run_config_holds_absolute_paths(trained):
    run, cfg, _ = trained
    assert Path(cfg.data.root).is_absolute() and Path(cfg.data.cache_dir).is_absolute()
    assert Path(cfg.data.root).parent == run.parent


def test_predict_without_a_mask_extracts_the_brain_for_a_brain_trained_model(trained, tmp_path, capsys, monkeypatch):
    """The phantom's given masks are brains inside a head: the contract says so, and predict with
    no mask flag extracts the brain of a raw T1 itself and says so in its output and sidecar."""
    pytest.importorskip("brainextractor")
    from mrsynth.data import skullstrip

    monkeypatch.setattr(skullstrip, "_ITERATIONS", 300)
    run, _, test = trained
    contract = read_contract(run)
    assert (contract.mask, contract.mask_extent, contract.voxel_size) == ("given", "brain", (2.0, 2.0, 2.0))
    code = main(["predict", "--checkpoint", str(run), "--input", str(test[0].t1), "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0 and "mask: brain extracted (BET)" in out, out
    sidecar = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert sidecar["Mask"]["source"] == "skull-strip" and "has a skull" in sidecar["Mask"]["why"]
    assert sidecar["Grid"]["resampled"] is False and sidecar["Grid"]["input_orientation"] == "PSR"


def test_a_run_that_did_not_record_its_mask_extent_still_asks_for_a_mask(trained):
    run, _, _ = trained
    old = dataclasses.replace(read_contract(run), mask_extent=None)
    with pytest.raises(MrsynthError, match="--mask FILE.DIR.*--skull-strip"):
        resolve_mask_policy(old, None, False, str(run))
    assert resolve_mask_policy(old, "otsu", False, str(run)).kind == "otsu"


@pytest.mark.slow
def test_predict_with_masks_matches_evaluate_from_another_directory(trained, tmp_path, monkeypatch):
    run, cfg, test = trained
    monkeypatch.chdir(tmp_path)  # evaluate and predict from elsewhere: the run's paths still hold
    old_umask = os.umask(0o022)
    try:
        evaluated = evaluate_psnr(run, tmp_path / "eval")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "eval").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "eval" / "report.html").stat().st_mode) == 0o644
    assert not (tmp_path / "phantom").exists() and not (tmp_path / "cache").exists()
    predicted = predict_scores(run, cfg, test, tmp_path / "pred", lambda f: ["--mask", str(f.mask)])
    contract = read_contract(run)
    train_t2_max = max(float(nib.load(str(f)).get_fdata().max())
                       for f in sorted(Path(cfg.data.root).glob("*-T2.nii.gz"))
                       if f.name.split("-")[0] in contract.subjects["train"])
    for subject, score in predicted.items():
        assert abs(score["psnr"] - evaluated[subject]) <= PSNR_GAP_DB, (subject, score["psnr"], evaluated[subject])
        assert score["max_output"] <= 1.5 * train_t2_max
        assert score["min_output"] >= min(0.0, contract.output_range()[0])
    # The synthesized volumes evaluate writes are masked like predict's output.
    written = nib.load(str(next((tmp_path / "eval" / "nifti").glob("*_jax_T2.nii.gz")))).get_fdata()
    mask = nib.load(str(test[0].mask)).get_fdata() > 0
    assert written.shape == mask.shape and np.all(written[~mask] == 0)


@pytest.fixture(scope="module")
def trained_on_extracted_masks(tmp_path_factory):
    """A run whose held-out subject's brain mask was made by brain extraction, as prepare-ixi
    --skull-strip makes it: evaluate scores in that mask, predict --skull-strip extracts its own.
    The training and validation subjects keep the phantom's brain masks (brains too, so the
    contract's extent is the same), which spares three of the four extractions."""
    pytest.importorskip("brainextractor")
    from mrsynth.data import skullstrip

    patch = pytest.MonkeyPatch()
    patch.setattr(skullstrip, "_ITERATIONS", 300)  # 3 s instead of 10 s a volume; masks and predict alike
    home = tmp_path_factory.mktemp("bet_home")
    assert main(["demo-data", "--out", str(home / "phantom"), "--subjects", "4", "--shape", "96", "112", "80"]) == 0
    sets = tiny_sets(home) + ["--set", "data.source=ixi", "--set", f"data.root={home / 'phantom'}",
                              "--set", f"data.cache_dir={home / 'cache'}", "--set", f"run.root={home / 'runs'}",
                              "--set", "data.split_fractions=[0.5,0.25,0.25]"]
    held_out = subject_splits(load_config(None, sets[1::2]).data)["test"]
    for files in held_out:
        volume, geometry = read_nifti(files.t1)
        brain = skullstrip.extract_brain(volume, geometry.voxel_size)
        write_like(brain.astype(np.float32), geometry, files.mask)
    assert main(["train", "--backend", "jax", "--run-dir", str(home / "run"), *sets]) == 0
    cfg = load_config(home / "run" / "config.yaml")
    test = subject_splits(cfg.data)["test"]
    assert [f.subject for f in test] == [f.subject for f in held_out]
    yield home / "run", cfg, test
    patch.undo()


@pytest.mark.slow
def test_predict_with_skull_strip_matches_evaluate(trained_on_extracted_masks, tmp_path):
    run, cfg, test = trained_on_extracted_masks
    evaluated = evaluate_psnr(run, tmp_path / "eval")
    predicted = predict_scores(run, cfg, test, tmp_path / "pred", lambda f: ["--skull-strip"])
    for files in test:
        score = predicted[files.subject]
        assert abs(score["psnr"] - evaluated[files.subject]) <= PSNR_GAP_DB, (score, evaluated)
        assert score["brain_coverage"] == 1.0
        sidecar = json.loads((tmp_path / "pred" / files.t1.name.replace(".nii.gz", "_synthT2.json")).read_text())
        assert sidecar["Mask"]["source"] == "skull-strip"
        assert sidecar["Mask"]["method"]["library"].startswith("brainextractor")


def test_mask_folder_pairs_by_subject_id(tmp_path):
    for name in ("IXI002-Guys-0828-mask.nii.gz", "IXI003-Guys-0829_brainmask.nii.gz", "other.txt"):
        (tmp_path / name).write_bytes(b"")
    assert subject_id(Path("IXI002-Guys-0828-T1.nii.gz")) == "IXI002-Guys-0828"
    assert find_mask(tmp_path, Path("x/IXI002-Guys-0828-T1.nii.gz")).name == "IXI002-Guys-0828-mask.nii.gz"
    assert find_mask(tmp_path, Path("IXI003-Guys-0829_T1w.nii")).name == "IXI003-Guys-0829_brainmask.nii.gz"
    with pytest.raises(Exception, match="no mask for subject 'IXI004'"):
        find_mask(tmp_path, Path("IXI004-T1.nii.gz"))


def test_the_data_folder_as_mask_folder_for_a_copy_of_the_input(tmp_path):
    """The subject's T1 and mask side by side, the input a copy elsewhere: the named mask wins,
    and the T1 copy is never taken for its mask; a mirroring folder of masks still pairs."""
    data, inputs, mirror = (tmp_path / d for d in ("data", "inputs", "mirror"))
    for folder in (data, inputs, mirror):
        folder.mkdir()
    for folder, name, content in ((data, "IXI901-Phantom-0001-T1.nii.gz", b"t1"),
                                  (data, "IXI901-Phantom-0001-T2.nii.gz", b"t2"),
                                  (data, "IXI901-Phantom-0001-mask.nii.gz", b"mask"),
                                  (inputs, "IXI901-Phantom-0001-T1.nii.gz", b"t1"),
                                  (mirror, "IXI901-Phantom-0001-T1.nii.gz", b"mask")):
        (folder / name).write_bytes(content)
    copy = inputs / "IXI901-Phantom-0001-T1.nii.gz"
    assert find_mask(data, copy).name == "IXI901-Phantom-0001-mask.nii.gz"
    assert find_mask(mirror, copy) == mirror / "IXI901-Phantom-0001-T1.nii.gz"
    (data / "IXI901-Phantom-0001-mask.nii.gz").unlink()
    with pytest.raises(Exception, match="no mask for subject"):
        find_mask(data, copy)  # only the T1 itself is left under the input's name


@pytest.mark.slow
def test_output_header_sidecar_tta_and_permissions(trained, tmp_path):
    run, _, test = trained
    files = test[0]
    old = os.umask(0o022)
    try:
        assert main(["predict", "--checkpoint", str(run), "--input", str(files.t1), "--out", str(tmp_path / "o"),
                     "--mask", str(files.mask.parent), "--tta", "flip", "--uncertainty"]) == 0
    finally:
        os.umask(old)
    stem = files.t1.name.replace(".nii.gz", "")
    out = tmp_path / "o" / f"{stem}_synthT2.nii.gz"
    mask_path = tmp_path / "o" / f"{stem}_synthT2_mask.nii.gz"
    spread_path = tmp_path / "o" / f"{stem}_synthT2_std.nii.gz"
    sidecar_path = tmp_path / "o" / f"{stem}_synthT2.json"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        p.name for p in (out, mask_path, spread_path, sidecar_path))
    for path in (out, mask_path, spread_path, sidecar_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for name in ("run.json", "config.yaml", "preprocessing.json", "model.safetensors"):
        assert stat.S_IMODE((run / name).stat().st_mode) & 0o044 == 0o044, name  # readable by others

    image = nib.load(str(out))
    assert b"synthetic T2w" in image.header["descrip"].tobytes()
    assert image.header["intent_name"].tobytes().startswith(b"synthT2w ")
    assert image.shape == nib.load(str(files.t1)).shape
    np.testing.assert_allclose(image.affine, nib.load(str(files.t1)).affine)

    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["Synthetic"] is True and sidecar["Notice"] == "synthetic image, not for diagnosis"
    assert sidecar["SourceSHA256"] == sha256_of(files.t1)
    assert sidecar["Mask"]["source"] == "given" and sidecar["Mask"]["sha256"] == sha256_of(files.mask)
    tensors, _, _ = load_portable(run / "model.safetensors")
    assert sidecar["Weights"]["tensors_sha256"] == tensors_sha256(tensors)
    assert sidecar["Weights"]["run_summary"]["steps"] == 40
    assert sidecar["TestTimeAugmentation"] == {"method": "flip", "planes": "slice_axis", "passes": 4}
    lo, hi = sidecar["Clipping"]["range"]
    data = image.get_fdata()
    mask = nib.load(str(files.mask)).get_fdata() > 0
    assert data[mask].min() >= lo - 1e-3 and data[mask].max() <= hi + 1e-3 and np.all(data[~mask] == 0)
    assert 0.0 <= sidecar["Clipping"]["clipped_fraction"] < 1.0
    spread = nib.load(str(spread_path)).get_fdata()
    assert np.all(spread >= 0) and np.all(spread[~mask] == 0) and spread[mask].max() > 0
    written_mask = nib.load(str(mask_path))  # where the T2 was synthesized: the given mask, on the T1's grid
    assert written_mask.get_data_dtype() == np.uint8 and written_mask.header["intent_name"].tobytes().rstrip(b"\0") == b"synthT2w mask"
    np.testing.assert_allclose(written_mask.affine, image.affine)
    np.testing.assert_array_equal(np.asarray(written_mask.dataobj) > 0, mask)
    assert int(np.asarray(written_mask.dataobj).sum()) == sidecar["Mask"]["voxels"]
    assert sidecar["Outputs"] == [p.name for p in (out, mask_path, spread_path)]


def test_a_synthesized_zero_counts_as_covered(tmp_path):
    """Coverage and the within-synthesis score read predict's mask, not the output's non-zero voxels."""
    from mrsynth.data.normalization import NormStats

    shape = (6, 6, 4)
    mask = np.zeros(shape, np.uint8)
    mask[1:5, 1:5, :] = 1
    synthesized = mask.copy()
    synthesized[4, :, :] = 0  # predict's mask leaves one row of the brain out
    t2 = np.where(mask > 0, np.linspace(1, 2, mask.size).reshape(shape), 0).astype(np.float32)
    pred = np.where(synthesized > 0, t2, 0).astype(np.float32)
    pred[1, 1, 0] = 0.0  # a synthesized voxel at the floor
    for name, volume in (("pred", pred), ("t2", t2), ("mask", mask), ("synth", synthesized)):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    cfg = load_config(None).data
    reference = NormStats(offset=0.0, scale=1.0)
    score = score_prediction(tmp_path / "pred.nii.gz", tmp_path / "t2.nii.gz", tmp_path / "mask.nii.gz", reference,
                             cfg, synthesized_in=tmp_path / "synth.nii.gz")
    assert score["brain_coverage"] == synthesized.sum() / mask.sum() == 0.75
    assert "brain_coverage" not in score_prediction(tmp_path / "pred.nii.gz", tmp_path / "t2.nii.gz",
                                                    tmp_path / "mask.nii.gz", reference, cfg)


def test_uncertainty_needs_tta(trained, tmp_path, capsys):
    run, _, test = trained
    assert main(["predict", "--checkpoint", str(run), "--input", str(test[0].t1), "--out", str(tmp_path / "o"),
                 "--mask", str(test[0].mask), "--uncertainty"]) == 1
    assert "--tta flip" in capsys.readouterr().err


def test_in_channels_is_not_a_user_key(capsys):
    assert main(["train", "--set", "model.in_channels=3"]) == 1
    assert "model.in_channels: not a user key" in capsys.readouterr().err


def test_a_2_5d_run_trains_and_both_backends_synthesize_the_same_volume(tmp_path):
    """data.context_slices through training, the portable file and predict in either framework."""
    from test_training_loop import tiny_overrides

    from mrsynth.backend import get_backend
    from mrsynth.inference.volume import synthesize_volume
    from mrsynth.parity.tolerances import DEFAULT_TOLERANCES
    from mrsynth.training.loop import train

    cfg = load_config(None, tiny_overrides(tmp_path) + ["data.context_slices=1", "model.dropout=0.0"])
    summary = train(cfg, "jax", tmp_path / "run")
    weights = Path(summary["run_dir"]) / "model.safetensors"
    t1 = np.random.default_rng(0).normal(size=(20, 24, 9)).astype(np.float32)
    volumes = [synthesize_volume(t1, get_backend(b).load_predictor(weights), cfg.data, cfg.eval) for b in ("jax", "torch")]
    assert get_backend("torch").load_predictor(weights).model_config.in_channels == 3
    relative = np.linalg.norm(volumes[0] - volumes[1]) / np.linalg.norm(volumes[1])
    assert relative <= DEFAULT_TOLERANCES["forward", "float32"]  # the forward parity tolerance


def test_planes_all_needs_a_model_trained_on_all_planes(trained, tmp_path, capsys):
    """A model that saw axial slices only is not applied along the other two axes."""
    run, _, test = trained
    code = main(["predict", "--checkpoint", str(run), "--input", str(test[0].t1), "--out", str(tmp_path / "o"),
                 "--mask", str(test[0].mask), "--planes", "all"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: --planes: ") and "data.planes: all" in err[0]
    assert not (tmp_path / "o").exists()
    assert main(["evaluate", "--checkpoint", str(run), "--planes", "all", "--out", str(tmp_path / "e")]) == 1
    assert "eval.planes: planes 'all' needs" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_an_all_planes_run_fuses_the_three_directions_the_same_in_both_backends(tmp_path):
    """data.planes: all through training and the portable file; eval.planes: all averages the
    three slice directions, in either framework."""
    from test_training_loop import tiny_overrides

    from mrsynth.backend import get_backend
    from mrsynth.inference.volume import synthesize_subject, synthesize_volume
    from mrsynth.parity.tolerances import DEFAULT_TOLERANCES
    from mrsynth.training.loop import train

    cfg = load_config(None, tiny_overrides(tmp_path) + ["data.planes=all", "eval.planes=all", "model.dropout=0.0"])
    summary = train(cfg, "jax", tmp_path / "run")
    assert read_contract(Path(summary["run_dir"])).planes == "all"
    weights = Path(summary["run_dir"]) / "model.safetensors"
    t1 = np.random.default_rng(0).normal(size=(20, 24, 16)).astype(np.float32)
    mask = np.ones_like(t1)
    fused = {}
    for name in ("jax", "torch"):
        predictor = get_backend(name).load_predictor(weights)
        fused[name] = synthesize_subject(t1, mask, predictor, cfg.data, cfg.eval, (-1e3, 1e3))
        directions = [synthesize_volume(t1, predictor, dataclasses.replace(cfg.data, slice_axis=axis), cfg.eval)
                      for axis in range(3)]
        assert fused[name].passes == 3
        np.testing.assert_allclose(fused[name].t2, np.mean(directions, axis=0), rtol=0, atol=1e-5)
        np.testing.assert_allclose(fused[name].spread, np.std(directions, axis=0), rtol=0, atol=1e-5)
    relative = np.linalg.norm(fused["jax"].t2 - fused["torch"].t2) / np.linalg.norm(fused["torch"].t2)
    assert relative <= DEFAULT_TOLERANCES["forward", "float32"]  # the forward parity tolerance
