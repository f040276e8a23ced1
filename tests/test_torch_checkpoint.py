"""Torch checkpoints and portable weights: safe loading, pruning, export/import round trips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mrsynth.config import config_from_dict, save_config
from mrsynth.errors import CheckpointError
from mrsynth.weights import load_portable
from torch_ref import checkpoint
from torch_ref.backend import create_backend
from torch_ref.model import UNet
from torch_ref.train import TorchEngine
from torch_ref.weights import load_state_into, load_weights, save_weights


def tiny_config(**model):
    return config_from_dict({
        "model": {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "groups": 2, **model},
        "data": {"patch_size": [16, 16]},
        "train": {"steps": 10, "warmup_steps": 1},
    })


class CreatesMarker:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    evil = ckpt_dir / "step_00000005.pt"
    torch.save({"format": checkpoint.FORMAT_NAME, "model": CreatesMarker(marker)}, evil)

    with pytest.raises(CheckpointError, match="step_00000005.pt"):
        checkpoint.read_checkpoint(evil)
    with pytest.raises(CheckpointError):
        TorchEngine(tiny_config(), tmp_path / "run").restore_checkpoint()
    assert not marker.exists()
    # The file really is hostile: an unsafe load would have run the code.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_garbage_and_foreign_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        checkpoint.read_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an mrsynth torch checkpoint"):
        checkpoint.read_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.read_checkpoint(tmp_path / "missing.pt")


def test_keeps_last_k_plus_best(tmp_path):
    engine = TorchEngine(tiny_config(), tmp_path)
    for step in (1, 2, 3):
        engine.save_checkpoint(step, {"best": step}, is_best=step == 2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "step_00000002.pt", "step_00000003.pt"]
    assert checkpoint.read_checkpoint(tmp_path / "checkpoints" / "best.pt")["step"] == 2
    assert checkpoint.find_checkpoint(tmp_path, "last").name == "step_00000003.pt"
    assert engine.restore_checkpoint() == (3, {"best": 3})


def test_checkpoints_of_another_layout_or_other_models_are_one_line_errors(tmp_path):
    engine = TorchEngine(tiny_config(), tmp_path)
    engine.save_checkpoint(1, {}, is_best=False)
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    payload = checkpoint.read_checkpoint(path)
    generator = payload["models"]["generator"]
    # Version 1 held one model and one optimizer, not keyed by model name.
    torch.save({**payload, "format_version": 1, "model": generator}, path)
    with pytest.raises(CheckpointError, match=r"step_00000001.pt: checkpoint version 1 is not supported"):
        engine.restore_checkpoint()
    torch.save({**payload, "models": {"discriminator": generator}}, path)
    with pytest.raises(CheckpointError) as info:
        engine.restore_checkpoint()
    assert str(info.value) == f"{path}: holds models discriminator; this run trains generator"


def test_portable_round_trip_keeps_every_tensor_and_dtype(tmp_path):
    cfg = tiny_config(norm="batch", residual=True).model
    model = UNet(cfg)
    with torch.no_grad():
        model.train()(torch.randn(2, 1, 8, 8))  # non-trivial running stats and num_batches_tracked
    path = tmp_path / "w.safetensors"
    save_weights(path, model, cfg, {"step": 7})
    tensors, file_cfg, meta = load_portable(path)
    assert file_cfg == cfg and meta["framework"] == "torch" and meta["step"] == "7"
    assert all(t.dtype == np.float32 for t in tensors.values())
    loaded, loaded_cfg, _ = load_weights(path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert loaded.state_dict()["encoders.0.norm1.num_batches_tracked"].dtype == torch.int64


def test_portable_mismatch_names_the_parameter(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, UNet(tiny_config().model), tiny_config().model)
    tensors, _, _ = load_portable(path)
    wider = UNet(tiny_config(base_channels=8).model)
    with pytest.raises(CheckpointError, match="encoders.0.conv1.weight"):
        load_state_into(wider, tensors, path)
    del tensors["head.bias"]
    with pytest.raises(CheckpointError, match="head.bias"):
        load_state_into(UNet(tiny_config().model), tensors, path)


def test_backend_predictors_and_export_agree_with_the_engine(tmp_path):
    cfg = tiny_config()
    run_dir = tmp_path / "run"
    save_config(cfg, run_dir / "config.yaml")
    engine = TorchEngine(cfg, run_dir)
    rng = np.random.default_rng(0)
    t1 = rng.standard_normal((2, 16, 16, 1)).astype(np.float32)
    engine.train_step({"t1": t1, "t2": t1 * 0.5, "mask": np.ones_like(t1)})
    engine.save_checkpoint(1, {}, is_best=True)
    expected = engine.predictor()(t1[:, :13, :11])

    backend = create_backend()
    assert backend.name == "torch"
    np.testing.assert_array_equal(backend.load_predictor(run_dir, "best")(t1[:, :13, :11]), expected)
    np.testing.assert_array_equal(backend.load_predictor(run_dir, "last")(t1[:, :13, :11]), expected)
    backend.export_weights(run_dir, tmp_path / "model.safetensors")
    portable = backend.load_predictor(tmp_path / "model.safetensors")
    assert portable.model_config == cfg.model
    np.testing.assert_array_equal(portable(t1[:, :13, :11]), expected)
    meta = load_portable(tmp_path / "model.safetensors")[2]
    assert (meta["framework"], meta["checkpoint"], meta["step"]) == ("torch", "best", "1")


def test_load_predictor_errors_name_the_source(tmp_path):
    backend = create_backend()
    with pytest.raises(CheckpointError, match="expected a run directory"):
        backend.load_predictor(tmp_path / "model.onnx")
    run_dir = tmp_path / "empty_run"
    save_config(tiny_config(), run_dir / "config.yaml")
    with pytest.raises(CheckpointError, match="no torch checkpoints"):
        backend.load_predictor(run_dir)
