"""pix2pix training (train.objective: pix2pix) in both engines: exact resume with both models and
both optimizers, and the generator alone in the portable file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrsynth.config import load_config
from mrsynth.training import loop

from test_training_loop import BACKENDS, CrashingLoader, portable_last, tiny_overrides

PIX2PIX = ["train.objective=pix2pix", "model.dropout=0.0", "discriminator.base_channels=4", "discriminator.layers=2"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_pix2pix_resumes_exactly_and_exports_the_generator_alone(backend, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides(tmp_path) + PIX2PIX)
    full = Path(loop.train(cfg, backend, tmp_path / "full")["run_dir"])
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert {"adv", "d_loss", "d_grad_norm"} <= {k for r in rows if r["kind"] == "train" for k in r}

    real_make = loop.make_train_loader
    monkeypatch.setattr(loop, "make_train_loader", lambda *a, **k: CrashingLoader(real_make(*a, **k), 5))
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, backend, tmp_path / "killed")
    monkeypatch.setattr(loop, "make_train_loader", real_make)
    loop.train(cfg, backend, tmp_path / "killed", resume=True)

    # The generator's last updates use the discriminator's restored weights and optimizer state,
    # so equal generators mean both models and both optimizers resumed exactly.
    want = portable_last(backend, full, tmp_path / "a.safetensors")
    got = portable_last(backend, tmp_path / "killed", tmp_path / "b.safetensors")
    assert want.keys() == got.keys() and not any(k.startswith("blocks.") for k in want)  # no critic
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
