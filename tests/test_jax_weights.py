"""NNX <-> portable (torch-layout) weights: names, layouts, exact round trip, clear mismatches."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from mrsynth.config import ModelConfig  # noqa: E402
from mrsynth.errors import CheckpointError  # noqa: E402
from jax_impl.model import build_model  # noqa: E402
from jax_impl.weights import load_torch_into, load_weights, model_to_torch, save_weights  # noqa: E402
from mrsynth.weights import load_portable  # noqa: E402


def cfg_2d(**kw) -> ModelConfig:
    base = dict(dims=2, depth=1, base_channels=4, channel_mults=(1, 2), norm="batch", residual=True)
    base.update(kw)
    return ModelConfig(**base)


def test_canonical_names_and_torch_layouts():
    tensors = model_to_torch(build_model(cfg_2d()))
    assert tensors["encoders.0.conv1.weight"].shape == (4, 1, 3, 3)  # (O, I, k, k)
    assert tensors["ups.0.weight"].shape == (8, 4, 2, 2)  # ConvTranspose (I, O, k, k)
    assert tensors["decoders.0.conv1.weight"].shape == (4, 8, 3, 3)
    assert tensors["encoders.0.skip.weight"].shape == (4, 1, 1, 1)
    assert tensors["head.weight"].shape == (1, 4, 1, 1)
    assert tensors["bottleneck.norm2.running_var"].shape == (8,)
    assert tensors["bottleneck.norm2.num_batches_tracked"].shape == ()
    assert not any("kernel" in n or "scale" in n for n in tensors)
    tensors3 = model_to_torch(build_model(cfg_2d(dims=3, upsample="resize_conv", norm="group", groups=2)))
    assert tensors3["ups.0.conv.weight"].shape == (4, 8, 3, 3, 3)
    assert tensors3["encoders.0.norm1.weight"].shape == (4,)


def test_export_import_round_trip_is_exact(tmp_path):
    cfg = cfg_2d()
    model = build_model(cfg, seed=3)
    model.encoders[0].norm1.running_var[...] = jnp.arange(4.0) + 0.5  # non-default stats survive too
    path = tmp_path / "w.safetensors"
    save_weights(path, model, cfg, {"note": "test"})
    loaded, loaded_cfg, _ = load_weights(path)
    assert loaded_cfg == cfg
    before, after = model_to_torch(model), model_to_torch(loaded)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    _, _, meta = load_portable(path)
    assert meta["framework"] == "jax" and meta["note"] == "test"


def test_weights_of_another_config_fail_naming_the_parameter(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, build_model(cfg_2d()), cfg_2d())
    other = build_model(cfg_2d(base_channels=8))
    tensors, _, _ = load_portable(path)
    with pytest.raises(CheckpointError, match=r"w\.safetensors: parameter '[\w.]+' has shape"):
        load_torch_into(other, tensors, path)
    with pytest.raises(CheckpointError, match=r"missing parameter 'bottleneck\.norm1\.bias' \(14 missing\)"):
        load_torch_into(build_model(cfg_2d(norm="group", groups=2, residual=False, upsample="resize_conv")),
                        {k: v for k, v in tensors.items() if "norm" not in k}, path)
    with pytest.raises(CheckpointError, match="expected"):
        load_weights(path, cfg_2d(base_channels=8))
