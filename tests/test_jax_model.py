"""The Flax NNX U-Net: shapes, every option, torch-equivalent layers, BatchNorm, dropout, bf16."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from mrsynth.config import ModelConfig  # noqa: E402
from jax_impl.layers import (BatchNorm, ConvTranspose2x, DepthStackedConv3d, Dropout, GroupNorm,  # noqa: E402
                             conv3d_formulation, group_norm)
from jax_impl.model import build_model, model_structure  # noqa: E402
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


@pytest.mark.parametrize("dims,conv3d", [(2, "auto"), (3, "stacked2d"), (3, "native")])
def test_conv_transpose_matches_torch_semantics_and_xla_transposed_conv(dims, conv3d):
    layer = ConvTranspose2x(dims, 3, 5, dtype=jnp.float32, rngs=nnx.Rngs(0), conv3d=conv3d)
    rng = np.random.default_rng(1)
    layer.bias.set_value(jnp.asarray(rng.normal(size=5), jnp.float32))
    x = rng.normal(size=(2, *([3] * dims), 3)).astype(np.float32)
    torch_weight = model_to_torch(layer)["weight"]
    assert torch_weight.shape == (3, 5, *([2] * dims))  # (in, out, k...)
    expected = _torch_conv_transpose_k2s2(x, torch_weight, np.asarray(layer.bias[...]))
    got = np.asarray(layer(jnp.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The matmul formulation is the same function as XLA's transposed convolution.
    reference = nnx.ConvTranspose(3, 5, (2,) * dims, strides=(2,) * dims, padding="VALID",
                                  transpose_kernel=True, rngs=nnx.Rngs(0))
    reference.kernel.set_value(layer.kernel.get_value())
    reference.bias.set_value(layer.bias.get_value())
    np.testing.assert_allclose(got, np.asarray(reference(jnp.asarray(x))), rtol=1e-5, atol=1e-5)


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


def test_depth_stacked_conv3d_equals_native_3d_conv_with_gradients():
    rngs = nnx.Rngs(0)
    layer = DepthStackedConv3d(3, 5, dtype=jnp.float32, rngs=rngs)
    native = nnx.Conv(3, 5, (3, 3, 3), padding=((1, 1),) * 3, rngs=nnx.Rngs(1))
    native.kernel.set_value(layer.kernel.get_value())
    layer.bias.set_value(jnp.arange(5, dtype=jnp.float32))
    native.bias.set_value(layer.bias.get_value())
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 5, 6, 7, 3)), jnp.float32)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(native(x)), rtol=1e-5, atol=1e-5)

    def grads(module):
        graphdef, state = nnx.split(module)
        loss = lambda st, xx: jnp.sum(jnp.sin(nnx.merge(graphdef, st)(xx)))  # noqa: E731
        g_state, g_x = jax.grad(loss, argnums=(0, 1))(state, x)
        return g_state["kernel"].get_value(), g_x

    (gk_a, gx_a), (gk_b, gx_b) = grads(layer), grads(native)
    np.testing.assert_allclose(np.asarray(gk_a), np.asarray(gk_b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gx_a), np.asarray(gx_b), rtol=1e-4, atol=1e-4)


def test_conv3d_auto_is_stacked2d_on_a_cpu_and_native_elsewhere(monkeypatch):
    assert conv3d_formulation("auto") == "stacked2d"  # the tests run on a CPU
    assert isinstance(build_model(tiny(dims=3)).encoders[0].conv1, DepthStackedConv3d)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert conv3d_formulation("auto") == "native" and conv3d_formulation("stacked2d") == "stacked2d"
    model = build_model(tiny(dims=3))
    assert isinstance(model.encoders[0].conv1, nnx.Conv) and model.ups[0].native
    assert not build_model(tiny(dims=2)).ups[0].native  # 2D transposed convs stay matmuls


@pytest.mark.parametrize("upsample", ["transpose", "resize_conv"])
def test_whole_3d_model_is_the_same_function_with_either_conv3d_formulation(upsample):
    cfg = tiny(dims=3, upsample=upsample)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(1, 8, 8, 8, 1)), jnp.float32)
    outputs = []
    for formulation in ("stacked2d", "native"):
        model = build_model(replace(cfg, conv3d=formulation))
        model.eval()
        outputs.append((np.asarray(model(x)), model_to_torch(model)))
    (a, wa), (b, wb) = outputs
    assert wa.keys() == wb.keys() and all(wa[k].shape == wb[k].shape for k in wa)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # same seed -> same weights -> same output


def _group_norm_float64(x: np.ndarray, groups: int, eps: float) -> np.ndarray:
    g = x.astype(np.float64).reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = np.square(g - mean).mean(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def test_group_norm_statistics_are_float32_accurate_on_large_groups():
    # 2 groups of 2 channels x 192 x 224 = 86016 values with an offset mean: nnx.GroupNorm's
    # single float32 reduction lands ~1e-5 from float64 here, the chunked one ~6e-8.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 192, 224, 4)) * rng.uniform(0.5, 2, size=4) + 1.0).astype(np.float32)
    expected = _group_norm_float64(x, 2, 1e-5)
    norm = GroupNorm(4, num_groups=2, epsilon=1e-5, dtype=jnp.float32)
    y = np.asarray(nnx.jit(lambda m, v: m(v))(norm, jnp.asarray(x)), np.float64)
    assert np.linalg.norm(y - expected) / np.linalg.norm(expected) <= 2e-6
    half = nnx.jit(lambda m, v: m(v))(GroupNorm(4, num_groups=2, epsilon=1e-5, dtype=jnp.bfloat16),
                                      jnp.asarray(x, jnp.bfloat16))
    assert half.dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_group_norm_analytic_gradient_equals_autodiff_of_the_formula(dtype, tolerance):
    """The custom VJP against JAX's autodiff of the plain float32 formula (bfloat16: the gradient
    w.r.t. x comes back in bfloat16, the parameters' in float32)."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 6, 5, 6)) * rng.uniform(0.5, 2, size=6) + 0.7, dtype)
    cotangent = jnp.asarray(rng.normal(size=x.shape), dtype)
    scale, bias = jnp.asarray(rng.uniform(0.5, 1.5, size=6), jnp.float32), jnp.asarray(rng.normal(size=6), jnp.float32)

    def formula(v, scale, bias):
        g = v.astype(jnp.float32).reshape(2, -1, 3, 2)
        mean = g.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 3), keepdims=True)
        return (((g - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(v.shape) * scale + bias).astype(dtype)

    def project(v, scale, bias):
        return group_norm(v.reshape(2, -1, 6), scale, bias, 3, 1e-5, jnp.dtype(dtype)).reshape(v.shape)

    args = (x, scale, bias)
    (y_ours, vjp_ours), (y_ref, vjp_ref) = jax.vjp(project, *args), jax.vjp(formula, *args)
    np.testing.assert_allclose(np.asarray(y_ours, np.float32), np.asarray(y_ref, np.float32),
                               rtol=tolerance, atol=tolerance)
    for ours, ref in zip(vjp_ours(cotangent), vjp_ref(cotangent)):
        assert ours.dtype == ref.dtype
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(ref, np.float32),
                                   rtol=tolerance, atol=tolerance * float(jnp.max(jnp.abs(ref.astype(jnp.float32)))))


def test_bfloat16_head_bias_gradient_matches_float32():
    cfg = tiny(base_channels=8)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 64, 64, 1)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, 64, 64, 1)) + 0.5, jnp.float32)

    def head_bias_grad(dtype: str) -> float:
        model = build_model(cfg, seed=0, compute_dtype=dtype)
        grads = nnx.jit(nnx.grad(lambda m: jnp.mean(jnp.abs(m(x) - target))))(model)
        return float(grads.head.bias.get_value()[0])

    exact, half = head_bias_grad("float32"), head_bias_grad("bfloat16")
    assert abs(half - exact) <= 0.01 * abs(exact)


def test_model_structure_gives_an_independent_abstract_network_on_every_call():
    """The abstract network is traced once per architecture and config; a caller that fills one
    (from a checkpoint) must leave the next caller's abstract, and a config change is a new one."""
    cfg = tiny(norm="batch")
    first = model_structure(cfg)
    nnx.update(first, nnx.state(build_model(cfg, seed=3)))
    first.eval()
    second = model_structure(cfg)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(second)))
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(nnx.state(first)))
    reference = build_model(cfg, seed=3)
    reference.eval()
    x = jnp.ones((1, 8, 8, 1))
    np.testing.assert_array_equal(np.asarray(first(x)), np.asarray(reference(x)))
    wider = model_structure(replace(cfg, base_channels=8))
    assert jax.tree.leaves(nnx.state(wider))[0].shape != jax.tree.leaves(nnx.state(second))[0].shape
