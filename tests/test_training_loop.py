"""The shared training loop end to end, with both backends, on a tiny phantom (CPU, seconds).

Covers: run directory contents, kill-and-resume equals uninterrupted, the NaN guard keeping
the last good checkpoint, and predict writing NIfTI on the input's grid, also across backends.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrsynth.backend import get_backend
from mrsynth.cli import main
from mrsynth.commands.train import finished_lines
from mrsynth.config import load_config
from mrsynth.errors import TrainingDiverged
from mrsynth.training import loop
from mrsynth.weights import load_portable

from data_fixtures import synthetic_head

BACKENDS = ["jax", "torch"]


def tiny_overrides(tmp: Path) -> list[str]:
    return [
        f"data.root={tmp / 'phantom'}", f"data.cache_dir={tmp / 'cache'}",
        "data.phantom_subjects=4", "data.phantom_shape=[32,32,24]", "data.patch_size=[32,32]",
        "data.split_fractions=[0.5,0.25,0.25]",
        "model.depth=2", "model.base_channels=4", "model.channel_mults=[1,2,4]", "model.groups=2",
        "model.dropout=0.1",
        "train.steps=6", "train.batch_size=4", "train.warmup_steps=1", "train.log_every=2",
        "train.val_every=3", "train.ckpt_every=3", "train.val_subjects_max=1",
        "train.deterministic=true", f"run.root={tmp / 'runs'}",
    ]


def train_tiny_run(home: Path, backend: str) -> Path:
    """The uninterrupted ``tiny_overrides(home)`` run of ``backend`` in ``home``, trained unless
    it is already there: the session's ``tiny_run`` (conftest.py) and the bad-inputs corpus
    (bad_inputs.py) share it."""
    run = home / f"{backend}_full"
    if not (run / "model.safetensors").is_file():
        loop.train(load_config(None, tiny_overrides(home)), backend, run)
    return run


class CrashingLoader:
    """Wraps the real loader and raises after ``crash_after`` batches (a simulated kill)."""

    def __init__(self, inner, crash_after: int, nan_after: int | None = None):
        self.inner, self.crash_after, self.nan_after, self.count = inner, crash_after, nan_after, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        batch = next(self.inner)
        if self.nan_after is not None and self.count > self.nan_after:
            return {**batch, "t1": np.full_like(batch["t1"], np.nan)}
        if self.count > self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)

    def close(self):
        self.inner.close()


def portable_last(backend: str, run_dir: Path, out: Path) -> dict[str, np.ndarray]:
    get_backend(backend).export_weights(run_dir, out, which="last")
    return load_portable(out)[0]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_writes_a_complete_run_and_resume_equals_uninterrupted(backend, tmp_path, monkeypatch, tiny_run):
    home, run = tiny_run(backend)  # the uninterrupted run (conftest.py), shared with other tests
    cfg = load_config(None, tiny_overrides(home))
    for name in ("config.yaml", "run.json", "metrics.jsonl", "preprocessing.json", "model.safetensors"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["backend"] == backend and info["steps_done"] == 6
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in events} == {"train", "val"}
    train_keys = {k for e in events if e["kind"] == "train" for k in e}
    assert train_keys == {"kind", "step", "time", "loss", "l1", "grad_norm", "lr", "images_per_s"}
    assert [e["step"] for e in events if e["kind"] == "val"] == [3, 6]

    real_make = loop.make_train_loader
    monkeypatch.setattr(loop, "make_train_loader", lambda *a, **k: CrashingLoader(real_make(*a, **k), 5))
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, backend, tmp_path / "killed")
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(loop, "make_train_loader", real_make)
    resumed = loop.train(cfg, backend, tmp_path / "killed", resume=True)
    assert resumed["steps"] == 6

    want = portable_last(backend, run, tmp_path / "a.safetensors")
    got = portable_last(backend, tmp_path / "killed", tmp_path / "b.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(backend, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides(tmp_path))
    real_make = loop.make_train_loader
    monkeypatch.setattr(loop, "make_train_loader",
                        lambda *a, **k: CrashingLoader(real_make(*a, **k), 99, nan_after=4))
    with pytest.raises(TrainingDiverged, match="loss became nan at step 5.*last good checkpoint: step 3"):
        loop.train(cfg, backend, tmp_path / "nan")
    info = json.loads((tmp_path / "nan" / "run.json").read_text())
    assert info["status"] == "diverged"
    weights = portable_last(backend, tmp_path / "nan", tmp_path / "w.safetensors")
    assert all(np.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_best_checkpoint_is_the_lowest_validation_also_between_checkpoint_steps(backend, tmp_path, monkeypatch):
    """Validation every 2 steps, step checkpoints every 100: the lowest validation MAE, at step 4,
    lies between them, and a worse one follows at the last step, after a kill at step 5 and a
    resume. The best checkpoint is step 4's (it used to stay unsaved, so "best" fell back to the
    last step), and the resumed run still names it."""
    cfg = load_config(None, tiny_overrides(tmp_path) + ["train.val_every=2", "train.ckpt_every=100"])
    scripted = iter([0.5, 0.3, 0.4])  # the validations at steps 2, 4 and 6
    real_validate, real_make = loop.validate, loop.make_train_loader
    monkeypatch.setattr(loop, "validate", lambda *a, **k: {**real_validate(*a, **k), "mae": next(scripted)})
    monkeypatch.setattr(loop, "make_train_loader", lambda *a, **k: CrashingLoader(real_make(*a, **k), 6))
    with pytest.raises(KeyboardInterrupt):  # fetching step 5's batch prefetches the 7th: killed before step 5
        loop.train(cfg, backend, tmp_path / "run")
    monkeypatch.setattr(loop, "make_train_loader", real_make)
    summary = loop.train(cfg, backend, tmp_path / "run", resume=True)
    assert (summary["steps"], summary["best_step"], summary["best_val_mae"]) == (6, 4, 0.3)
    assert "\nbest checkpoint (evaluate, predict and model.safetensors use it): step 4, validation mae 0.3\n" \
        in finished_lines(summary)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(e["step"], e["mae"]) for e in events if e["kind"] == "val"] == [(2, 0.5), (4, 0.3), (6, 0.4)]
    meta = load_portable(tmp_path / "run" / "model.safetensors")[2]
    assert (meta["checkpoint"], meta["step"]) == ("best", "4")
    get_backend(backend).export_weights(tmp_path / "run", tmp_path / "last.safetensors", which="last")
    assert load_portable(tmp_path / "last.safetensors")[2]["step"] == "6"


@pytest.mark.slow
def test_predict_writes_input_grid_and_crosses_backends(tmp_path, monkeypatch):
    overrides = tiny_overrides(tmp_path)
    sets = [arg for o in overrides for arg in ("--set", o)]
    monkeypatch.chdir(tmp_path)  # a relative --run-dir, as users type it (orbax needs absolute paths)
    assert main(["train", "--backend", "jax", "--run-dir", "run", *sets]) == 0
    t1 = sorted((tmp_path / "phantom").glob("*-T1.nii.gz"))[0]
    mask = Path(str(t1).replace("-T1.nii.gz", "-mask.nii.gz"))
    src = nib.load(t1)

    assert main(["predict", "--checkpoint", str(tmp_path / "run"), "--input", str(t1), "--mask", str(mask),
                 "--output", str(tmp_path / "out_jax")]) == 0
    out_jax = nib.load(next((tmp_path / "out_jax").glob("*_synthT2.nii.gz")))
    assert out_jax.shape == src.shape
    np.testing.assert_allclose(out_jax.affine, src.affine)
    assert nib.aff2axcodes(out_jax.affine) == nib.aff2axcodes(src.affine)

    # The JAX run's portable weights synthesize the same volume in PyTorch.
    assert main(["predict", "--backend", "torch", "--weights", str(tmp_path / "run" / "model.safetensors"),
                 "--input", str(t1), "--mask", str(mask), "--output", str(tmp_path / "out_torch")]) == 0
    out_torch = nib.load(next((tmp_path / "out_torch").glob("*_synthT2.nii.gz")))
    a, b = out_jax.get_fdata(), out_torch.get_fdata()
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(a).max(), 1.0)


def test_log_rows_average_every_metric_the_engine_reports_and_keep_the_last_lr():
    steps = [{"loss": 1.0, "ssim": 0.2, "grad_norm": 3.0, "lr": 0.1},
             {"loss": 3.0, "ssim": 0.4, "grad_norm": 5.0, "lr": 0.2}]
    assert loop.window_metrics(steps) == pytest.approx({"loss": 2.0, "ssim": 0.3, "grad_norm": 4.0, "lr": 0.2})


def test_predict_reports_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad-T1.nii.gz"
    bad.write_bytes(b"not a nifti file")
    run = tmp_path / "norun"
    run.mkdir()
    assert main(["predict", "--checkpoint", str(run), "--input", str(bad), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an mrsynth run directory" in err[0]


def test_commands_look_the_backend_up_at_call_time(monkeypatch):
    """A command module first imported while a test substitutes the backend must not keep it."""
    import importlib
    import sys

    from mrsynth import backend

    real = backend.get_backend
    for name in ("mrsynth.commands.predict", "mrsynth.commands.export", "mrsynth.training.loop"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with monkeypatch.context() as patched:
        patched.setattr(backend, "get_backend", lambda name: "substitute")
        modules = [importlib.import_module(n) for n in
                   ("mrsynth.commands.predict", "mrsynth.commands.export", "mrsynth.training.loop")]
    for module in modules:
        assert getattr(module, "get_backend", real) is real, module.__name__
        assert module.backends.get_backend is real, module.__name__


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_init_weights_start_the_generator_from_a_portable_file_of_either_framework(backend, tmp_path, capsys):
    """train.init_weights: the generator starts from the file (written by the other framework,
    from another seed), not from train.seed; a file for another model fails before a run folder exists."""
    import dataclasses

    cfg = load_config(None, tiny_overrides(tmp_path))
    other = "torch" if backend == "jax" else "jax"
    if other == "jax":
        from jax_impl.model import build_model
        from jax_impl.weights import save_weights

        source = build_model(cfg.model, seed=7)
    else:
        import torch

        from torch_ref.model import build_model
        from torch_ref.weights import save_weights

        torch.manual_seed(7)
        source = build_model(cfg.model)
    path = tmp_path / "init.safetensors"
    save_weights(path, source, cfg.model)
    tensors = load_portable(path)[0]
    started = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_weights=str(path)))
    if backend == "jax":
        from jax_impl.objectives import generator_model
        from jax_impl.weights import model_to_torch

        weights, seeded = model_to_torch(generator_model(started, None)), model_to_torch(generator_model(cfg, None))
    else:
        from torch_ref.objectives import generator_model

        weights = {k: v.numpy() for k, v in generator_model(started).state_dict().items()}
        seeded = {k: v.numpy() for k, v in generator_model(cfg).state_dict().items()}
    assert weights.keys() == tensors.keys()
    for name in tensors:
        np.testing.assert_array_equal(weights[name], tensors[name], err_msg=name)
    assert any(not np.array_equal(seeded[n], tensors[n]) for n in tensors if n.endswith("weight"))
    runs_root = tmp_path / "runs"
    code = main(["train", "--backend", backend, *[a for o in tiny_overrides(tmp_path) for a in ("--set", o)],
                 "--set", f"train.init_weights={path}", "--set", "model.base_channels=8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"error: {path}: weights are for model config")
    assert not runs_root.exists() or not any(runs_root.iterdir())
    summary = loop.train(started, backend, tmp_path / "run")  # the whole run: steps, checkpoints, export
    info = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    assert info["status"] == "completed" and len(info["init_weights_sha256"]) == 64


def test_a_capped_validation_speaks_for_more_than_the_first_site(tmp_path, write_nifti_file):
    """Three of the four validation subjects at Guys, one at HH, two validated: one from each,
    not the two whose ids sort first (both Guys)."""
    for i, site in enumerate(["Guys", "Guys", "Guys", "HH", "IOP"]):
        head = synthetic_head((24, 24, 16), seed=i)
        for role, key in [("T1", "t1"), ("T2", "t2"), ("mask", "mask")]:
            write_nifti_file(tmp_path / "ixi" / f"IXI{100 + i}-{site}-{1000 + i}-{role}.nii.gz", head[key])
    cfg = load_config(None, [f"data.root={tmp_path / 'ixi'}", "data.source=ixi", f"data.cache_dir={tmp_path / 'cache'}",
                             "data.train_subjects=[IXI104]", "data.val_subjects=[IXI100,IXI101,IXI102,IXI103]",
                             "data.test_subjects=[]", "train.val_subjects_max=2"])
    assert [vol.subject for vol in loop.load_train_data(cfg).val] == ["IXI100", "IXI103"]
