"""Which checkpoint a run directory yields, the same in both backends: best falls back to last."""
from __future__ import annotations

import numpy as np
import pytest

from mrsynth import backend as backends
from mrsynth.config import config_from_dict, save_config
from mrsynth.errors import CheckpointError
from mrsynth.weights import load_portable

LAST_STEP = {"jax": "last/3", "torch": "step_00000003.pt"}


def tiny_config():
    return config_from_dict({
        "model": {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "groups": 2},
        "data": {"patch_size": [8, 8]},
        "train": {"steps": 10, "warmup_steps": 1, "batch_size": 4},
    })


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_best_falls_back_to_the_last_checkpoint_when_the_run_saved_no_best(name, tmp_path):
    pytest.importorskip({"jax": "jax", "torch": "torch"}[name])
    backend = backends.get_backend(name)
    cfg = tiny_config()
    run_dir = tmp_path / "run"
    save_config(cfg, run_dir / "config.yaml")
    with pytest.raises(CheckpointError, match=rf"run/checkpoints: no {name} checkpoints found"):
        backend.load_predictor(run_dir, "best")
    engine = backend.create_engine(cfg, run_dir)
    t1 = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    engine.train_step({"t1": t1, "t2": t1 * 0.5, "mask": np.ones_like(t1)})
    engine.save_checkpoint(3, {}, is_best=False)
    expected = engine.predictor()(t1)
    engine.close()

    np.testing.assert_allclose(backend.load_predictor(run_dir, "best")(t1), expected, rtol=1e-6, atol=1e-6)
    backend.export_weights(run_dir, tmp_path / "model.safetensors", which="best")
    meta = load_portable(tmp_path / "model.safetensors")[2]
    assert (meta["checkpoint"], meta["checkpoint_file"], meta["step"]) == ("best", LAST_STEP[name], "3")
    with pytest.raises(CheckpointError, match=r"run: unknown checkpoint 'first' \(choose best or last\)"):
        backend.load_predictor(run_dir, "first")
