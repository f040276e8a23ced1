"""Whole volumes assembled on the backends' devices: the same result as a float64 host reference,
one compiled shape per volume, the training precision, the compilation cache's folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mrsynth.config import DataConfig, EvalConfig, ModelConfig
from mrsynth.data.sampling import context_indices
from mrsynth.inference.volume import blend_weight, patch_starts, synthesize_subject, synthesize_volume

TOLERANCE = 1e-5  # float32 sums against float64 (outputs of order 1)
CFG_2D = ModelConfig(dims=2, depth=2, base_channels=4, channel_mults=(1, 2, 4), groups=2, in_channels=3)
CFG_3D = ModelConfig(dims=3, depth=2, base_channels=4, channel_mults=(1, 2, 4), groups=2)


def _predictor(backend: str, cfg: ModelConfig):
    if backend == "jax":
        pytest.importorskip("jax")
        from jax_impl.model import build_model
        from jax_impl.predict import JaxPredictor

        return JaxPredictor(build_model(cfg, seed=3), cfg)
    torch = pytest.importorskip("torch")
    from torch_ref.model import build_model
    from torch_ref.predict import TorchPredictor

    torch.manual_seed(3)
    return TorchPredictor(build_model(cfg), cfg, torch.device("cpu"))


def _reference_slices(t1: np.ndarray, predictor, axis: int) -> np.ndarray:
    """One slice at a time through the host call, float64."""
    slices = np.moveaxis(t1, axis, 0)
    context = (predictor.model_config.in_channels - 1) // 2
    out = np.zeros(slices.shape, np.float64)
    for i in range(len(slices)):
        batch = np.moveaxis(slices[context_indices(i, context, len(slices))], 0, -1)[None]
        out[i] = predictor(np.ascontiguousarray(batch))[0, ..., 0]
    return np.moveaxis(out, 0, axis)


def _reference_patches(t1: np.ndarray, predictor, patch: tuple[int, int, int], eval_cfg: EvalConfig) -> np.ndarray:
    """One patch at a time through the host call, weighted sums and their division in float64."""
    weight = blend_weight(patch, eval_cfg.blend).astype(np.float64)
    total = np.zeros(t1.shape, np.float64)
    weights = np.zeros(t1.shape, np.float64)
    for start in np.ndindex(*(len(patch_starts(n, p, eval_cfg.patch_overlap)) for n, p in zip(t1.shape, patch))):
        corner = [patch_starts(n, p, eval_cfg.patch_overlap)[i] for n, p, i in zip(t1.shape, patch, start)]
        window = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        total[window] += predictor(t1[window][None, ..., None])[0, ..., 0] * weight
        weights[window] += weight
    return total / weights


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("axis", [0, 2])
def test_device_slices_match_the_host_reference(backend, axis):
    t1 = np.random.default_rng(0).normal(size=(9, 12, 10)).astype(np.float32)
    predictor = _predictor(backend, CFG_2D)
    out = synthesize_volume(t1, predictor, DataConfig(slice_axis=axis, patch_size=(8, 8)), EvalConfig(inference_batch=4))
    assert out.dtype == np.float32 and out.shape == t1.shape
    np.testing.assert_allclose(out, _reference_slices(t1, predictor, axis), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_device_blending_matches_the_float64_host_reference(backend, blend):
    t1 = np.random.default_rng(1).normal(size=(13, 11, 18)).astype(np.float32)
    predictor = _predictor(backend, CFG_3D)
    eval_cfg = EvalConfig(inference_batch=3, blend=blend, patch_overlap=0.5)
    out = synthesize_volume(t1, predictor, DataConfig(patch_size=(8, 8, 8)), eval_cfg)
    assert out.dtype == np.float32 and out.shape == t1.shape
    np.testing.assert_allclose(out, _reference_patches(t1, predictor, (8, 8, 8), eval_cfg), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_output_contract_on_the_device(backend):
    """Clipped to the range, 0 outside the mask, the clipped fraction counted inside the mask."""
    t1 = np.random.default_rng(2).normal(size=(6, 8, 8)).astype(np.float32)
    mask = np.zeros_like(t1)
    mask[:, 2:6, 2:6] = 1
    predictor = _predictor(backend, CFG_2D)
    raw = synthesize_volume(t1, predictor, DataConfig(patch_size=(8, 8)), EvalConfig())
    lo, hi = np.quantile(raw[mask > 0], [0.2, 0.8])
    result = synthesize_subject(t1, mask, predictor, DataConfig(patch_size=(8, 8)), EvalConfig(), (lo, hi))
    np.testing.assert_allclose(result.t2, np.where(mask > 0, np.clip(raw, lo, hi), 0), rtol=0, atol=1e-6)
    expected = np.count_nonzero(((raw < lo) | (raw > hi)) & (mask > 0)) / np.count_nonzero(mask)
    assert result.clipped_fraction == pytest.approx(expected)



@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_no_verb_reads_a_device_value_back(backend):
    """The clipped fraction stays on the device (a host int would be a device sync inside the
    verb) and is 0 when nothing is inside the mask; the accumulator starts at zeros."""
    predictor = _predictor(backend, CFG_2D)
    volume = predictor.to_device(np.array([[[-3.0, 0.5, 3.0, 9.0]]], np.float32))
    inside = predictor.to_device(np.array([[[True, True, True, False]]]))
    out, fraction = predictor.clip_and_mask(volume, inside, -1.0, 1.0)
    assert not isinstance(fraction, (int, float, np.generic))
    assert float(predictor.to_host(fraction)) == pytest.approx(2 / 3)
    np.testing.assert_array_equal(predictor.to_host(out), [[[-1.0, 0.5, 1.0, 0.0]]])
    _, none_inside = predictor.clip_and_mask(volume, predictor.to_device(np.zeros((1, 1, 4), bool)), -1.0, 1.0)
    assert float(predictor.to_host(none_inside)) == 0.0
    np.testing.assert_array_equal(predictor.to_host(predictor.zeros((2, 3, 4))), np.zeros((2, 3, 4)))

def test_jax_compiles_once_per_volume_whatever_the_batch_remainder():
    """9 slices in batches of 4 and 5 patches in batches of 2: the network is traced once each."""
    pytest.importorskip("jax")
    from flax import nnx

    from jax_impl.predict import JaxPredictor

    traced: list[tuple[int, ...]] = []

    class Recorder(nnx.Module):  # traced shapes, not calls: a Python side effect runs at trace time
        def __call__(self, x):
            traced.append(x.shape)
            return x[..., :1] * 2.0

    cfg_2d = ModelConfig(dims=2, depth=1, channel_mults=(1, 2))
    synthesize_volume(np.ones((9, 4, 6), np.float32), JaxPredictor(Recorder(), cfg_2d),
                      DataConfig(slice_axis=0, patch_size=(4, 4)), EvalConfig(inference_batch=4))
    assert traced == [(4, 4, 6, 1)]
    traced.clear()
    cfg_3d = ModelConfig(dims=3, depth=1, channel_mults=(1, 2))
    out = synthesize_volume(np.ones((4, 4, 12), np.float32), JaxPredictor(Recorder(), cfg_3d),
                            DataConfig(patch_size=(4, 4, 4)), EvalConfig(inference_batch=2, patch_overlap=0.5))
    assert len(patch_starts(12, 4, 0.5)) == 5 and traced == [(2, 4, 4, 4, 1)]
    np.testing.assert_allclose(out, 2.0, rtol=1e-6)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_weight_files_predict_in_their_training_precision(tmp_path, backend):
    """A bfloat16 run's weights are loaded for bfloat16 compute; the output stays float32."""
    cfg = ModelConfig(dims=2, depth=1, base_channels=4, channel_mults=(1, 2), groups=2)
    path = tmp_path / "w.safetensors"
    meta = {"config": json.dumps({"train": {"precision": "bfloat16"}})}
    if backend == "jax":
        pytest.importorskip("jax")
        from jax_impl.backend import JaxBackend as Backend
        from jax_impl.model import build_model
        from jax_impl.weights import save_weights
    else:
        pytest.importorskip("torch")
        from torch_ref.backend import TorchBackend as Backend
        from torch_ref.model import build_model
        from torch_ref.weights import save_weights
    model = build_model(cfg)
    save_weights(path, model, cfg, meta)
    save_weights(tmp_path / "w32.safetensors", model, cfg, {})
    t1 = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    outs = {}
    for name in ("w.safetensors", "w32.safetensors"):
        predictor = Backend().load_predictor(tmp_path / name)
        outs[predictor.precision] = synthesize_volume(t1, predictor, DataConfig(patch_size=(8, 8)), EvalConfig())
    assert set(outs) == {"bfloat16", "float32"} and outs["bfloat16"].dtype == np.float32
    difference = np.abs(outs["bfloat16"] - outs["float32"]).max()
    assert 1e-5 < difference < 0.1 * np.abs(outs["float32"]).max()  # bf16 arithmetic, same function


def test_compilation_cache_folder(monkeypatch, tmp_path):
    pytest.importorskip("jax")
    from jax_impl.backend import CACHE_ENV, compilation_cache_dir

    monkeypatch.setenv(CACHE_ENV, "off")
    assert compilation_cache_dir() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "jit"))
    assert compilation_cache_dir() == tmp_path / "jit"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache_dir() == tmp_path / "mrsynth" / "jax"
