"""`export --format onnx`: the ONNX model synthesizes the volume both backends synthesize from the
same portable weights (onnxruntime, >= 60 dB), takes any multiple of 2**depth, carries the
metadata and model card, and is never left half-written; without onnx, one line says what to install."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrsynth import backend as backends
from mrsynth.cli import main
from mrsynth.config import DataConfig, EvalConfig, ModelConfig
from mrsynth.evaluation.metrics import psnr
from mrsynth.inference.volume import crop_to, pad_to_multiple, synthesize_subject

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

CARD = "# Model card: tiny\n\n**Synthetic.**\n"


class OnnxPredictor:
    """The Predictor contract (channels-last batches, any size) on an onnxruntime session."""

    def __init__(self, path: Path, model_config: ModelConfig):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.model_config = model_config

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        spatial = tuple(range(1, batch.ndim - 1))
        padded, crop = pad_to_multiple(batch, 2 ** self.model_config.depth, spatial)
        out = self.session.run(None, {"t1": np.moveaxis(padded, -1, 1).astype(np.float32)})[0]
        return crop_to(np.moveaxis(out, 1, -1), crop)


def _portable(tmp_path: Path, dims: int, context: int = 0) -> tuple[Path, ModelConfig]:
    from torch_ref.model import UNet
    from torch_ref.weights import save_weights

    torch.manual_seed(0)
    cfg = ModelConfig(dims=dims, depth=2, base_channels=4, channel_mults=(1, 2, 4), groups=2,
                      in_channels=2 * context + 1)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, UNet(cfg), cfg, {"model_card": CARD, "run": "tiny"})
    return path, cfg


@pytest.mark.slow
def test_onnx_volume_equals_both_backends_and_any_multiple_of_two_to_the_depth(tmp_path):
    from torch_ref.weights import export_onnx

    weights, cfg = _portable(tmp_path, dims=2, context=1)
    out = tmp_path / "export" / "tiny.onnx"
    out.parent.mkdir()
    assert export_onnx(weights, out) == out.with_suffix(".md")
    assert out.with_suffix(".md").read_text() == CARD
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["model_card"] == CARD and '"in_channels": 3' in props["model_config"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["batch", 3, "4*height_div4", "4*width_div4"]]

    rng = np.random.default_rng(1)
    t1 = rng.normal(size=(18, 22, 7)).astype(np.float32)  # in-plane sizes no multiple of 4: predictors pad
    mask = np.zeros(t1.shape, np.uint8)
    mask[2:-2, 3:-3, 1:-1] = 1
    data_cfg, eval_cfg = DataConfig(context_slices=1, patch_size=(16, 16)), EvalConfig(inference_batch=3)
    volumes = {}
    for name, predictor in (("onnx", OnnxPredictor(out, cfg)),
                            ("torch", backends.get_backend("torch").load_predictor(weights)),
                            ("jax", backends.get_backend("jax").load_predictor(weights))):
        volumes[name] = synthesize_subject(t1, mask, predictor, data_cfg, eval_cfg, (-50.0, 50.0)).t2
    span = float(volumes["torch"].max() - volumes["torch"].min())
    for name in ("torch", "jax"):
        assert psnr(volumes["onnx"], volumes[name], span) >= 60.0, name
    assert np.abs(volumes["onnx"]).max() > 0

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in ((3, 3, 12, 20), (1, 3, 4, 8)):  # other batch and sizes than the example it was traced with
        assert session.run(None, {"t1": rng.normal(size=shape).astype(np.float32)})[0].shape == (shape[0], 1, *shape[2:])
    with pytest.raises(Exception):
        session.run(None, {"t1": np.zeros((1, 3, 10, 8), np.float32)})  # 10 is no multiple of 4


@pytest.mark.slow
def test_3d_onnx_matches_torch_on_two_sizes(tmp_path):
    from torch_ref.weights import export_onnx
    from torch_ref.weights import load_weights

    weights, cfg = _portable(tmp_path, dims=3)
    export_onnx(weights, tmp_path / "tiny3d.onnx")
    session = ort.InferenceSession(str(tmp_path / "tiny3d.onnx"), providers=["CPUExecutionProvider"])
    model = load_weights(weights)[0]
    rng = np.random.default_rng(2)
    for shape in ((1, 1, 8, 12, 16), (2, 1, 4, 4, 8)):
        x = rng.normal(size=shape).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"t1": x})[0], want, atol=1e-5)


def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    from torch_ref import weights as torch_weights

    weights, _ = _portable(tmp_path, dims=2)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()

    def fails_half_way(proto, path):
        Path(path).write_bytes(b"half")
        raise OSError("disk gone")

    monkeypatch.setattr(onnx, "save_model", fails_half_way)
    with pytest.raises(OSError, match="disk gone"):
        torch_weights.export_onnx(weights, out)
    assert list(out.parent.iterdir()) == []


def test_cli_refuses_in_one_line_without_onnx_and_with_a_wrong_name(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx"), "--format", "onnx"]) == 1
    assert capsys.readouterr().err == "error: export --format onnx: needs onnx: pip install 'mrsynth[onnx]'\n"
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add --format onnx" in err
    weights, _ = _portable(tmp_path, dims=2)
    assert main(["export", "--weights", str(weights), "--out", str(tmp_path / "w.safetensors")]) == 1
    assert "already a portable file" in capsys.readouterr().err
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())
