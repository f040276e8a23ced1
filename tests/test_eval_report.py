"""evaluate/compare end to end on tiny NIfTI subjects with a fake backend; report and tables agree."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import mrsynth
from mrsynth import backend as backend_module
from mrsynth.cli import main
from mrsynth.config import config_from_dict, save_config
from mrsynth.data.contract import build_contract, read_contract, write_contract
from mrsynth.data.discovery import discover_pairs
from mrsynth.data.preprocess import load_volume
from mrsynth.evaluation.report import format_summary
from mrsynth.evaluation.runner import evaluate_runs, load_run
from mrsynth.reporting import format_number

SUBJECTS = ["IXI001", "IXI002", "IXI003", "IXI004", "IXI005"]
SHAPE = (20, 24, 18)


def _write(array, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ixi")
    rng = np.random.default_rng(0)
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:-3, 4:-4, 3:-3] = 1
    for i, subject in enumerate(SUBJECTS):
        t1 = 100 + 30 * ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.5) * 5
        t2 = 300 - 0.8 * t1 + rng.normal(size=SHAPE) * (1 + i)
        stem = f"{subject}-Guys-{1000 + i}"
        _write((t1 * mask).astype(np.float32), root / f"{stem}-T1.nii.gz")
        _write((t2 * mask).astype(np.float32), root / f"{stem}-T2.nii.gz")
        _write(mask, root / f"{stem}-mask.nii.gz")
    return root


class FakePredictor:
    """A 'network' that inverts and slightly shrinks the normalized T1."""

    def __init__(self, model_config, gain: float):
        self.model_config = model_config
        self.gain = gain

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return (-self.gain * batch).astype(np.float32)


class FakeBackend:
    def __init__(self, name: str):
        self.name = name

    def load_predictor(self, source: Path, which: str = "best"):
        from mrsynth.runs import load_run_config

        gain = 0.9 if self.name == "jax" else 0.8
        return FakePredictor(load_run_config(source).model, gain)


def _make_run(tmp_path: Path, dataset: Path, backend: str, dims: int = 2) -> Path:
    run_dir = tmp_path / f"demo-{backend}"
    run_dir.mkdir()
    model = {"dims": dims, "depth": 1, "base_channels": 4, "channel_mults": [1, 2]}
    cfg = config_from_dict({
        "data": {"source": "ixi", "root": str(dataset), "cache_dir": str(tmp_path / "cache"),
                 "train_subjects": SUBJECTS[:2], "val_subjects": SUBJECTS[2:3], "test_subjects": SUBJECTS[3:],
                 "patch_size": [8] * dims},
        "model": model,
        "train": {"steps": 20, "warmup_steps": 2},
    })
    save_config(cfg, run_dir / "config.yaml")
    train_files = [f for f in discover_pairs(cfg.data) if f.subject in SUBJECTS[:2]]
    volumes = [load_volume(f, cfg.data) for f in train_files]
    write_contract(run_dir, build_contract(cfg.data, train_files, volumes, {"train": SUBJECTS[:2]}))
    (run_dir / "run.json").write_text(json.dumps({"backend": backend, "status": "completed", "steps_done": 20}))
    lines = [{"kind": "train", "step": s, "loss": 1.0 / s, "grad_norm": 1.0, "lr": 1e-3} for s in (5, 10, 15, 20)]
    lines += [{"kind": "val", "step": 20, "mae": 0.3, "psnr": 20.0, "ssim": 0.7}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run_dir


@pytest.fixture
def fake_backends(monkeypatch):
    monkeypatch.setattr(backend_module, "get_backend", lambda name: FakeBackend(name))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_command_writes_consistent_report(tmp_path, dataset, fake_backends, capsys):
    run_dir = _make_run(tmp_path, dataset, "jax")
    assert main(["evaluate", "--checkpoint", str(run_dir)]) == 0
    out = run_dir / "eval_test"
    assert "report:" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and 'src="figures' not in html
    rows = _read_csv(out / "per_subject.csv")
    assert {(r["subject"], r["method"]) for r in rows} == {
        (s, m) for s in SUBJECTS[3:] for m in ("jax", "identity", "linear", "histmatch")}
    summary = _read_csv(out / "summary.csv")
    for row in summary:
        if row["metric"] in ("psnr", "ssim", "mae", "nrmse", "pearson", "ssim2d"):
            stats = {k: float(row[k]) for k in ("mean", "sd", "ci_low", "ci_high")}
            assert format_summary(stats) in html, row
    for row in rows:  # the per-subject table shows the CSV values
        assert f"<td>{format_number(float(row['mae']))}</td>" in html
    # summary mean equals the mean of the per-subject rows
    jax_mae = [float(r["mae"]) for r in rows if r["method"] == "jax"]
    assert float(next(r["mean"] for r in summary if r["method"] == "jax" and r["metric"] == "mae")) == \
        pytest.approx(np.mean(jax_mae))
    # 2 test subjects: bootstrap intervals inside the metric's range, and the report says they mean little
    assert {r["ci_method"] for r in summary} == {"bootstrap"}
    assert all(float(r["ci_high"]) <= 1 for r in summary if r["metric"].startswith("ssim"))
    assert all(float(r["ci_low"]) >= 0 for r in summary if r["metric"].startswith("mae"))
    assert "Only 2 subject(s): the confidence intervals say little." in html
    assert "mostly background outside the brain mask" in html
    tests = _read_csv(out / "paired_tests.csv")
    assert {(t["a"], t["b"]) for t in tests} == {("jax", b) for b in ("identity", "linear", "histmatch")}
    data = json.loads((out / "summary.json").read_text())
    assert data["split"] == "test" and data["subjects"] == SUBJECTS[3:]
    assert (out / "report.md").read_text().count("![") >= 3
    # synthesized NIfTI: normalized T2 units on the T1 grid, = the fake network's output as every
    # command delivers it: clipped to the training T2 range, 0 outside the mask
    cfg = load_run(run_dir).cfg
    files = next(f for f in discover_pairs(cfg.data) if f.subject == SUBJECTS[3])
    volume = load_volume(files, cfg.data)
    written = nib.load(str(out / "nifti" / f"{SUBJECTS[3]}_jax_T2.nii.gz"))
    np.testing.assert_allclose(written.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    expected = np.where(volume.mask > 0, np.clip(-0.9 * volume.t1, *read_contract(run_dir).t2_range), 0.0)
    np.testing.assert_allclose(np.asarray(written.dataobj), expected, atol=1e-5)
    # marked synthetic and in which units, not the T1's header description
    assert written.header["descrip"].tobytes().rstrip(b"\0").decode() == \
        f"mrsynth {mrsynth.__version__} synthetic image, not for diagnosis (T2w, {cfg.data.normalization} units)"
    assert written.header["intent_name"].tobytes().rstrip(b"\0").decode() == f"synthT2w {mrsynth.__version__}"
    # the linear baseline learned the inversion: far better than the identity
    by_method = {r["method"]: r for r in summary if r["metric"] == "pearson"}
    assert float(by_method["linear"]["mean"]) > 0.9 and float(by_method["identity"]["mean"]) < -0.9
    # scored in worker processes beside the synthesis: the same tables, byte for byte
    assert main(["evaluate", "--checkpoint", str(run_dir), "--score-workers", "2", "--out", str(tmp_path / "w")]) == 0
    for table in ("per_subject.csv", "summary.csv", "paired_tests.csv"):
        assert (tmp_path / "w" / table).read_bytes() == (out / table).read_bytes(), table


def test_compare_two_runs_3d_with_run_vs_run_tests(tmp_path, dataset, fake_backends):
    runs = [load_run(_make_run(tmp_path, dataset, b, dims=3)) for b in ("jax", "torch")]
    result, report = evaluate_runs(runs, "val", tmp_path / "cmp")
    assert result.methods[:2] == ["jax", "torch"] and result.subjects == [SUBJECTS[2]]
    pairs = {(t["a"], t["b"]) for t in result.tests}
    assert ("jax", "torch") in pairs and ("torch", "linear") in pairs
    assert all(np.isnan(t["p_t"]) and "n < 2" in t["note"] for t in result.tests)
    assert (tmp_path / "cmp" / "figures" / "training_curves.png").is_file()
    html = report.read_text()
    assert "Training curves" in html and "jax" in html and "torch" in html
    # a second run replaces the earlier report atomically
    evaluate_runs(runs, "val", tmp_path / "cmp")


def test_user_errors_are_one_line(tmp_path, dataset, fake_backends, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 1
    assert "not an mrsynth run directory" in capsys.readouterr().err
    run_dir = _make_run(tmp_path, dataset, "jax")
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["evaluate", "--checkpoint", str(run_dir), "--out", str(keep)]) == 1
    assert "not an mrsynth report directory" in capsys.readouterr().err
    assert (keep / "notes.txt").read_text() == "mine"
    assert main(["compare", "--set", "train.steps=3", str(run_dir)]) == 1


def test_report_names_where_the_data_came_from():
    from mrsynth.evaluation.report import data_location

    assert data_location({"source": "manifest", "manifest": "/d/manifest.csv", "root": "data/phantom"}) == \
        "/d/manifest.csv"
    assert data_location({"source": "glob", "root": "/p", "t1_glob": "*/t1.nii.gz", "t2_glob": "*/t2.nii.gz"}) == \
        "/p/*/t1.nii.gz + */t2.nii.gz"
    assert data_location({"source": "ixi", "root": "/ixi"}) == "/ixi"
