"""The framework-free network description (mrsynth.architecture) against both backends' models,
the FLOP counts it gives the benchmark, and ``model.arch`` in the registries and weight files."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from mrsynth.architecture import describe
from mrsynth.bench.runner import network_figures
from mrsynth.bench.settings import case_config, load_bench_config
from mrsynth.bench.variants import parse_variant
from mrsynth.config import ModelConfig
from mrsynth.errors import ConfigError
from mrsynth.weights import load_portable

REPO = Path(__file__).resolve().parents[1]
TINY = dict(depth=1, base_channels=4, channel_mults=(1, 2), groups=2)
CONFIGS = {
    "2d-group-transpose-maxpool-deep": dict(dims=2, norm="group", depth=2, channel_mults=(1, 2, 4)),
    "2d-batch-resize-conv-residual": dict(dims=2, norm="batch", upsample="resize_conv", downsample="conv",
                                          residual=True),
    "2d-instance-transpose-conv-residual": dict(dims=2, norm="instance", downsample="conv", residual=True),
    "2d-none-resize-maxpool": dict(dims=2, norm="none", upsample="resize_conv"),
    "3d-group-resize-conv-residual": dict(dims=3, norm="group", upsample="resize_conv", downsample="conv",
                                          residual=True),
    "3d-batch-transpose-maxpool-deep": dict(dims=3, norm="batch", depth=2, channel_mults=(1, 2, 4)),
    "3d-none-transpose-conv-residual": dict(dims=3, norm="none", downsample="conv", residual=True),
}
# Computed by the hand-written U-Net FLOP counter this description replaced (mrsynth/bench/flops.py
# before the architecture registry): (parameters, forward FLOPs, train step FLOPs) per bench case.
BENCH_FIGURES = {
    ("bench_cpu.yaml", 2): (29641, 399507456, 1198522368),
    ("bench_cpu.yaml", 3): (21517, 198049792, 594149376),
    ("bench_gpu.yaml", 2): (31042369, 3077880938496, 9233642815488),
    ("bench_gpu.yaml", 3): (5602529, 3583076466688, 10749229400064),
}


def model_config(name: str) -> ModelConfig:
    return ModelConfig(**{**TINY, **CONFIGS[name]})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_description_counts_the_torch_models_parameters_layer_by_layer(name):
    pytest.importorskip("torch")
    from torch_ref.model import build_model

    cfg = model_config(name)
    params = dict(build_model(cfg).named_parameters())
    net = describe(cfg)
    assert net.parameter_count() == sum(p.numel() for p in params.values())
    assert {layer.name for layer in net.layers} == {n.rsplit(".", 1)[0] for n in params}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_description_counts_the_jax_models_parameters(name):
    pytest.importorskip("jax")
    import jax
    from flax import nnx

    from jax_impl.model import build_model

    cfg = model_config(name)
    abstract = nnx.eval_shape(lambda: build_model(cfg))
    assert describe(cfg).parameter_count() == sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("config, dims", sorted(BENCH_FIGURES))
def test_bench_flops_equal_the_former_hand_written_counts(config, dims):
    settings, raw = load_bench_config(REPO / "configs" / config)
    case = settings.cases[f"{dims}d"]
    cfg = case_config(raw, dims, case, case.batch[0], parse_variant("float32"))
    figures = network_figures(cfg.model, case.size, case.batch[0])
    assert (figures["parameters"], figures["forward_flops"], figures["train_step_flops"]) == BENCH_FIGURES[config, dims]


def test_an_architecture_without_a_description_has_unknown_figures():
    cfg = ModelConfig(arch="undescribed", **TINY)
    assert describe(cfg) is None
    assert network_figures(cfg, [16, 16], 2) == {"parameters": None, "forward_flops": None, "train_step_flops": None}


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_an_unregistered_architecture_fails_at_build_time_naming_the_key(framework):
    pytest.importorskip(framework)
    from importlib import import_module

    build_model = import_module({"jax": "jax_impl.model", "torch": "torch_ref.model"}[framework]).build_model
    with pytest.raises(ConfigError, match=rf"^model\.arch: unknown architecture 'nope' for the {framework} "
                                          r"backend \(choose from unet\)$"):
        build_model(ModelConfig(arch="nope", **TINY))


def test_weight_files_record_arch_and_old_files_without_it_load_as_unet(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    from jax_impl.weights import load_weights as jax_load_weights
    from torch_ref.model import build_model
    from torch_ref.weights import load_weights as torch_load_weights, save_weights

    cfg = ModelConfig(norm="batch", **TINY)
    path = tmp_path / "new.safetensors"
    save_weights(path, build_model(cfg), cfg)
    _, _, meta = load_portable(path)
    assert json.loads(meta["model_config"])["arch"] == "unet"
    with safe_open(str(path), framework="numpy") as handle:
        arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    old_config = {k: v for k, v in asdict(cfg).items() if k != "arch"}
    old = tmp_path / "old.safetensors"
    save_file(arrays, str(old), metadata={**meta, "model_config": json.dumps(old_config)})

    assert load_portable(old)[1] == cfg
    for load_weights in (jax_load_weights, torch_load_weights):
        _, loaded_cfg, _ = load_weights(old)
        assert loaded_cfg.arch == "unet"
