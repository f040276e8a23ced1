"""The torch U-Net: every option builds and runs, names follow docs/ARCHITECTURE.md, any size predicts."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mrsynth.config import ModelConfig
from torch_ref.model import UNet, decayed_parameter_names
from torch_ref.predict import TorchPredictor, channels_first_copy, channels_last_format

OPTIONS = list(itertools.product(
    (2, 3), ("group", "batch", "instance", "none"), ("transpose", "resize_conv"),
    ("maxpool", "conv"), ("relu", "leaky_relu", "silu"), (False, True),
))


def tiny(**overrides) -> ModelConfig:
    base = dict(dims=2, depth=2, base_channels=4, channel_mults=(1, 2, 2), groups=2)
    base.update(overrides)
    return ModelConfig(**base)


def spec_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter/buffer names and shapes written out from the ARCHITECTURE.md spec, independently."""
    k = (3,) * cfg.dims
    ch = [cfg.base_channels * m for m in cfg.channel_mults]
    out: dict[str, tuple[int, ...]] = {}

    def norm(prefix: str, c: int) -> None:
        if cfg.norm == "none":
            return
        out[f"{prefix}.weight"] = (c,)
        out[f"{prefix}.bias"] = (c,)
        if cfg.norm == "batch":
            out[f"{prefix}.running_mean"] = (c,)
            out[f"{prefix}.running_var"] = (c,)
            out[f"{prefix}.num_batches_tracked"] = ()

    def block(prefix: str, cin: int, cout: int) -> None:
        out[f"{prefix}.conv1.weight"] = (cout, cin, *k)
        out[f"{prefix}.conv1.bias"] = (cout,)
        norm(f"{prefix}.norm1", cout)
        out[f"{prefix}.conv2.weight"] = (cout, cout, *k)
        out[f"{prefix}.conv2.bias"] = (cout,)
        norm(f"{prefix}.norm2", cout)
        if cfg.residual and cin != cout:
            out[f"{prefix}.skip.weight"] = (cout, cin, *(1,) * cfg.dims)
            out[f"{prefix}.skip.bias"] = (cout,)

    for i in range(cfg.depth):
        block(f"encoders.{i}", cfg.in_channels if i == 0 else ch[i - 1], ch[i])
        if cfg.downsample == "conv":
            out[f"downs.{i}.weight"] = (ch[i], ch[i], *k)
            out[f"downs.{i}.bias"] = (ch[i],)
        if cfg.upsample == "transpose":
            out[f"ups.{i}.weight"] = (ch[i + 1], ch[i], *(2,) * cfg.dims)
            out[f"ups.{i}.bias"] = (ch[i],)
        else:
            out[f"ups.{i}.conv.weight"] = (ch[i], ch[i + 1], *k)
            out[f"ups.{i}.conv.bias"] = (ch[i],)
        block(f"decoders.{i}", 2 * ch[i], ch[i])
    block("bottleneck", ch[cfg.depth - 1], ch[cfg.depth])
    out["head.weight"] = (cfg.out_channels, ch[0], *(1,) * cfg.dims)
    out["head.bias"] = (cfg.out_channels,)
    return out


@pytest.mark.parametrize("dims,norm,upsample,downsample,activation,residual", OPTIONS)
def test_every_option_builds_runs_and_has_canonical_names(dims, norm, upsample, downsample, activation, residual):
    cfg = tiny(dims=dims, norm=norm, upsample=upsample, downsample=downsample,
               activation=activation, residual=residual)
    model = UNet(cfg)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == spec_shapes(cfg)
    x = torch.randn(2, 1, *(8,) * dims)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_residual_identity_skip_has_no_parameters_when_channels_match():
    cfg = tiny(residual=True, channel_mults=(1, 1, 1), in_channels=4)
    skips = {n.split(".skip.")[0] for n in UNet(cfg).state_dict() if ".skip." in n}
    assert skips == {"decoders.0", "decoders.1"}  # only the 2c -> c decoder blocks change width


def test_dropout_is_elementwise_in_training_and_off_in_eval():
    model = UNet(tiny(dropout=0.5))
    x = torch.randn(1, 1, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_weight_decay_mask_is_conv_weights_only():
    model = UNet(tiny(norm="batch", residual=True, downsample="conv"))
    decayed = decayed_parameter_names(model)
    conv_weights = {n for n, p in model.named_parameters() if n.endswith(".weight") and ".norm" not in n}
    assert decayed == conv_weights
    assert not any(".norm" in n or n.endswith(".bias") for n in decayed)


@pytest.mark.parametrize("dims,shape", [(2, (3, 17, 23)), (2, (1, 8, 8)), (3, (2, 9, 13, 11))])
def test_predictor_pads_odd_sizes_and_crops_back(dims, shape):
    cfg = tiny(dims=dims)
    model = UNet(cfg)
    predictor = TorchPredictor(model, cfg, torch.device("cpu"))
    batch = np.random.default_rng(0).standard_normal((*shape, 1)).astype(np.float32)
    out = predictor(batch)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert model.training, "the predictor must restore train mode"
    # Padding is at the high end only: the crop equals running the padded input by hand.
    padded_shape = [-(-s // 4) * 4 for s in shape[1:]]
    padded = np.zeros((shape[0], *padded_shape, 1), np.float32)
    padded[(slice(None), *(slice(0, s) for s in shape[1:]))] = batch
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(channels_first_copy(padded))).numpy()
    ref = np.moveaxis(ref, 1, -1)[(slice(None), *(slice(0, s) for s in shape[1:]))]
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_predictor_computes_the_same_function(dims):
    """`cl`: channels_last (2D) / channels_last_3d (3D) strides change the kernels, not the result."""
    cfg = ModelConfig(dims=dims, depth=1, base_channels=4, channel_mults=(1, 2), groups=2, in_channels=3)
    torch.manual_seed(0)
    model = UNet(cfg)
    batch = np.random.default_rng(0).standard_normal((2, *(8,) * dims, 3)).astype(np.float32)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(
        args[0].is_contiguous(memory_format=channels_last_format(dims))))
    plain = TorchPredictor(model, cfg, torch.device("cpu"))(batch)
    strided = TorchPredictor(model, cfg, torch.device("cpu"), channels_last=True)(batch)
    assert channels_last_format(dims) == (torch.channels_last if dims == 2 else torch.channels_last_3d)
    assert seen == [False, True]
    np.testing.assert_allclose(strided, plain, rtol=1e-5, atol=1e-6)


def test_predictor_rejects_wrong_rank():
    cfg = tiny()
    with pytest.raises(ValueError, match="expected"):
        TorchPredictor(UNet(cfg), cfg, torch.device("cpu"))(np.zeros((2, 8, 8, 8, 1), np.float32))


def test_state_dict_to_numpy_returns_copies():
    from torch_ref.weights import state_dict_to_numpy
    model = UNet(tiny())
    arrays = state_dict_to_numpy(model.state_dict())
    before = {name: a.copy() for name, a in arrays.items()}
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(1)
    assert all(np.array_equal(arrays[name], before[name]) for name in arrays)
