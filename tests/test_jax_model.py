"""The Flax NNX U-Net: shapes, every option, torch-equivalent layers, BatchNorm, dropout, bf16."""
from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from mrsynth.config import ModelConfig  # noqa: E402
from jax_impl.model import BatchNorm, Dropout, build_model, conv_transpose  # noqa: E402
from jax_impl.predict import JaxPredictor  # noqa: E402
from jax_impl.weights import model_to_torch  # noqa: E402


# One compiled forward beats op-by-op eager dispatch on a busy CPU.
forward = nnx.jit(lambda model, x: model(x))


def tiny(**kw) -> ModelConfig:
    base = dict(dims=2, depth=1, base_channels=4, channel_mults=(1, 2), groups=2)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("dims,depth,shape", [(2, 2, (3, 13, 21)), (3, 1, (2, 5, 6, 7))])
def test_predictor_pads_odd_sizes_and_crops_back(dims, depth, shape):
    cfg = tiny(dims=dims, depth=depth, channel_mults=(1,) * (depth + 1))
    x = np.random.default_rng(0).normal(size=(*shape, 1)).astype(np.float32)
    out = JaxPredictor(build_model(cfg), cfg)(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all()


# Each value of every option appears at least once, in 2D and 3D (dropout: tests below and
# in test_jax_train.py).
OPTION_SETS = [
    dict(dims=2, norm="group", upsample="transpose", downsample="maxpool", activation="relu", residual=False),
    dict(dims=2, norm="batch", upsample="resize_conv", downsample="conv", activation="leaky_relu", residual=True),
    dict(dims=2, norm="instance", upsample="transpose", downsample="conv", activation="silu", residual=True),
    dict(dims=2, norm="none", upsample="resize_conv", downsample="maxpool", activation="relu", residual=True),
    dict(dims=3, norm="group", upsample="resize_conv", downsample="conv", activation="silu", residual=False),
    dict(dims=3, norm="batch", upsample="transpose", downsample="maxpool", activation="relu", residual=True),
    dict(dims=3, norm="instance", upsample="resize_conv", downsample="maxpool", activation="leaky_relu", residual=False),
    dict(dims=3, norm="none", upsample="transpose", downsample="conv", activation="relu", residual=True),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_option_builds_and_runs(options):
    cfg = tiny(**options)
    model = build_model(cfg)
    spatial = (4,) * cfg.dims
    out = forward(model, jnp.ones((2, *spatial, 1)))
    assert out.shape == (2, *spatial, 1) and out.dtype == jnp.float32
    names = set(model_to_torch(model))
    assert ("encoders.0.norm1.weight" in names) == (options["norm"] != "none")
    assert ("downs.0.weight" in names) == (options["downsample"] == "conv")
    assert ("ups.0.conv.weight" in names) == (options["upsample"] == "resize_conv")
    assert ("encoders.0.skip.weight" in names) == options["residual"]
    assert ("encoders.0.norm1.running_var" in names) == (options["norm"] == "batch")


def _torch_conv_transpose_k2s2(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """torch ConvTranspose(k=2, s=2) semantics, channels-last: out[2i+a] = sum_c x[i, c] W[c, o, a]."""
    dims = x.ndim - 2
    if dims == 2:
        y = np.einsum("bhwc,coxy->bhxwyo", x, weight)
    else:
        y = np.einsum("bdhwc,cozxy->bdzhxwyo", x, weight)
    b, *sp, _ = x.shape
    return y.reshape(b, *[2 * s for s in sp], weight.shape[1]) + bias


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_transpose_matches_torch_semantics_after_conversion(dims):
    layer = conv_transpose(dims, 3, 5, dtype=jnp.float32, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, *([3] * dims), 3)).astype(np.float32)
    torch_weight = model_to_torch(layer)["weight"]
    assert torch_weight.shape == (3, 5, *([2] * dims))  # (in, out, k...)
    expected = _torch_conv_transpose_k2s2(x, torch_weight, np.asarray(layer.bias[...]))
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)


def test_conv_weight_conversion_matches_cross_correlation():
    model = build_model(tiny())
    layer = model.encoders[0].conv1
    w = model_to_torch(model)["encoders.0.conv1.weight"]  # (O, I, 3, 3)
    x = np.random.default_rng(2).normal(size=(1, 6, 5, 1)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((1, 6, 5, w.shape[0]), np.float32)
    for i in range(6):
        for j in range(5):
            expected[0, i, j] = np.einsum("hwc,ochw->o", xp[0, i:i + 3, j:j + 3], w)
    expected += np.asarray(layer.bias[...])
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)


def test_batchnorm_tracks_torch_running_stats():
    bn = BatchNorm(3, epsilon=1e-5, dtype=jnp.float32)
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(4, 5, 6, 3)).astype(np.float32)
    y = np.asarray(bn(jnp.asarray(x)))
    flat = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(bn.running_mean[...], 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var[...], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    assert int(bn.num_batches_tracked[...]) == 1
    np.testing.assert_allclose(y, (x - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5), rtol=1e-4, atol=1e-5)
    bn.use_running_average = True
    y_eval = np.asarray(bn(jnp.asarray(x)))
    expected = (x - bn.running_mean[...]) / np.sqrt(bn.running_var[...] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked[...]) == 1


def test_dropout_mask_depends_on_sample_key_not_batch_split():
    drop = Dropout(0.5, layer_id=3)
    x = jnp.ones((4, 6, 6, 2))
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    whole = np.asarray(drop(x, keys))
    halves = np.concatenate([np.asarray(drop(x[:2], keys[:2])), np.asarray(drop(x[2:], keys[2:]))])
    np.testing.assert_array_equal(whole, halves)
    assert set(np.unique(whole)) == {0.0, 2.0}
    drop.deterministic = True
    np.testing.assert_array_equal(np.asarray(drop(x, None)), np.asarray(x))


def test_bfloat16_compute_keeps_float32_params_and_output():
    cfg = tiny()
    model = build_model(cfg, compute_dtype="bfloat16")
    params = nnx.state(model, nnx.Param)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 8, 8, 1)).astype(np.float32))
    out = forward(model, x)
    assert out.dtype == jnp.float32
    reference = forward(build_model(cfg), x)  # same seed, float32 compute
    assert float(jnp.max(jnp.abs(out - reference))) < 0.1 * float(jnp.max(jnp.abs(reference))) + 0.05
