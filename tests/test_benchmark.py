"""`run.py benchmark`: FLOP formula (DESIGN.md anchors, torch's own counter), variants, and one
tiny end-to-end run of the command checking the report's content (not its speed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mrsynth.architecture import describe
from mrsynth.bench import flops
from mrsynth.bench.settings import case_config, load_bench_config
from mrsynth.bench.stats import summarize
from mrsynth.bench.variants import parse_variant
from mrsynth.cli import main
from mrsynth.config import ModelConfig
from mrsynth.errors import ConfigError


def test_flops_reproduce_the_design_anchors():
    unet2d = describe(ModelConfig(dims=2, depth=4, base_channels=64, channel_mults=(1, 2, 4, 8, 16)))
    assert flops.train_step_flops(unet2d, (256, 256), 32) / 1e12 == pytest.approx(9.23, abs=0.005)
    assert unet2d.parameter_count() == pytest.approx(31e6, rel=0.01)
    unet3d = describe(ModelConfig(dims=3, depth=3, base_channels=32, channel_mults=(1, 2, 4, 8)))
    assert flops.train_step_flops(unet3d, (32, 128, 128), 16) / 1e12 == pytest.approx(10.7, abs=0.06)
    assert flops.train_step_flops(unet3d, (32, 128, 128), 16) == 3 * flops.forward_flops(unet3d, (32, 128, 128), 16)


@pytest.mark.parametrize("model", [
    dict(dims=2, depth=2, base_channels=4, channel_mults=(1, 2, 4)),
    dict(dims=2, depth=1, base_channels=4, channel_mults=(1, 3), upsample="resize_conv", downsample="conv",
         residual=True, in_channels=2, out_channels=3, groups=1),
    dict(dims=3, depth=1, base_channels=4, channel_mults=(1, 2), residual=True),
])
def test_forward_flops_and_parameters_match_torch(model):
    """Independent check: torch's FlopCounterMode and parameter count of the reference U-Net."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from torch_ref.model import UNet

    cfg = ModelConfig(**model)
    spatial = (16,) * cfg.dims
    net = UNet(cfg)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(2, cfg.in_channels, *spatial))
    assert flops.forward_flops(describe(cfg), spatial, 2) == counter.get_total_flops()
    assert describe(cfg).parameter_count() == sum(p.numel() for p in net.parameters())


def test_variants_parse_and_select_backends():
    v = parse_variant("BFLOAT16+compile+cl")
    assert (v.name, v.precision) == ("bfloat16+cl+compile", "bfloat16")
    assert v.applies_to("torch") and not v.applies_to("jax")
    assert v.train_overrides() == {"precision": "bfloat16", "torch_compile": True, "torch_compile_mode": "default",
                                   "torch_compile_optimizer": False, "channels_last": True,
                                   "parallel": "sharded"}
    strongest = parse_variant("bfloat16+cl+autotune+compileopt")
    assert strongest.name == "bfloat16+autotune+cl+compileopt" and not strongest.applies_to("jax")
    assert {k: strongest.train_overrides()[k] for k in ("torch_compile", "torch_compile_mode",
                                                        "torch_compile_optimizer")} == {
        "torch_compile": True, "torch_compile_mode": "max-autotune", "torch_compile_optimizer": True}
    assert parse_variant("float32+compileopt").train_overrides()["torch_compile"] is False
    assert parse_variant("float32").applies_to("jax") and parse_variant("float32").applies_to("torch")
    assert parse_variant("tf32+pmap").train_overrides()["parallel"] == "pmap"
    assert parse_variant("float32").model_overrides() == {}  # the config's model.conv3d (auto)
    for switch, conv3d in (("native3d", "native"), ("stacked2d", "stacked2d")):
        variant = parse_variant(f"float32+{switch}")
        assert variant.model_overrides() == {"conv3d": conv3d}
        assert not variant.applies_to("torch") and variant.applies_to_dims(3) and not variant.applies_to_dims(2)
    assert parse_variant("tf32+pmap").applies_to_dims(2)
    for bad in ("fp16", "fp32", "float32+bfloat16", "compile", "bfloat16+pmap+compile", "bfloat16+autotune+pmap",
                "tf32+native3d+stacked2d"):
        with pytest.raises(ConfigError):
            parse_variant(bad)


def test_a_conv3d_switch_sets_the_model_config_of_the_3d_case():
    settings, raw = load_bench_config(Path(__file__).resolve().parents[1] / "configs" / "bench_gpu.yaml")
    case = settings.cases["3d"]
    conv3d = {name: case_config(raw, 3, case, 16, parse_variant(name)).model.conv3d
              for name in ("bfloat16", "bfloat16+native3d", "bfloat16+stacked2d")}
    assert conv3d == {"bfloat16": "auto", "bfloat16+native3d": "native", "bfloat16+stacked2d": "stacked2d"}


def test_summarize_reports_percentiles_in_ms():
    s = summarize([0.001 * i for i in range(1, 11)])
    assert s["median_ms"] == pytest.approx(5.5) and s["n"] == 10
    assert s["p10_ms"] < s["median_ms"] < s["p90_ms"] and s["min_ms"] == pytest.approx(1.0)


TINY = {
    "benchmark": {
        "backends": ["jax", "torch"], "dims": [2, 3], "variants": ["float32"], "steps": 3, "warmup": 1,
        "rounds": 2, "pipeline_steps": 2, "inference_subjects": 1, "scaling_dims": [2],
        "scaling_devices": [1, 2], "scaling_modes": ["sharded", "pmap"], "scaling_steps": 2,
        "torch_cpu_threads": 1, "matmul_size": 128,
        "cases": {"2d": {"batch": [2], "size": [16, 16], "model": {"depth": 1, "base_channels": 4,
                                                               "channel_mults": [1, 2]}},
                  "3d": {"batch": [1], "size": [8, 16, 16], "model": {"depth": 1, "base_channels": 4,
                                                                  "channel_mults": [1, 2]}}},
    },
    "data": {"source": "phantom", "phantom_subjects": 1, "phantom_shape": [24, 24, 16], "workers": 0},
    "model": {"groups": 4},
    "train": {"steps": 100, "warmup_steps": 1},
    "eval": {"inference_batch": 8},
}


@pytest.mark.slow
def test_benchmark_command_writes_a_complete_report(tmp_path: Path, capsys):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    raw = json.loads(json.dumps(TINY))
    raw["data"].update(root=str(tmp_path / "phantom"), cache_dir=str(tmp_path / "cache"))
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "report"

    assert main(["benchmark", "--config", str(config), "--out", str(out)]) == 0

    stdout = capsys.readouterr().out
    assert "median ms" in stdout and "efficiency" in stdout and "ddp" in stdout and "JAX XLA_FLAGS" in stdout
    results = json.loads((out / "results.json").read_text())
    assert {"cpu_model", "cpu_count", "libraries", "load_average"} <= set(results["machine"])
    assert set(results["devices"]) == {"jax", "torch"}
    measured = results["peaks"]["measured"]
    shared = results["peaks"]["shared"]["float32"]
    assert shared == max(measured["jax"]["float32"], measured["torch"]["float32"]) > 0
    assert results["devices"]["jax"]["xla_flags_added"] == []  # a CPU install: no GPU flags
    cases = {c["id"]: c for c in results["cases"]}
    assert set(cases) == {"2d-b2-16x16", "3d-b1-8x16x16"}
    for case in cases.values():
        model = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in case["model"].items()})
        assert case["train_step_flops"] == flops.train_step_flops(describe(model), case["size"], case["batch"])
        assert case["loader"]["samples_per_s"] > 0
    rows = {(r["case"], r["backend"]): r for r in results["train"]}
    assert set(rows) == {(c, b) for c in cases for b in ("jax", "torch")}
    for row in rows.values():
        assert row["step"]["n"] == 3 and 0 < row["step"]["p10_ms"] <= row["step"]["median_ms"] <= row["step"]["p90_ms"]
        assert row["first_step_s"] > 0 and row["tflops"] > 0 and 0 < row["peak_fraction"]
        assert row["peak_tflops"] == shared  # one ceiling for both backends
        assert row["pipeline"]["samples_per_s"] > 0
        assert row["inference"]["median_s"] > 0 and row["inference"]["volume_shape"] == [24, 24, 16]
        assert row["memory"]["host_peak_rss_mib"] > 0
    assert rows[("3d-b1-8x16x16", "jax")]["inference"]["mode"] == "3D patch-wise"
    scaled = {(block["backend"], r["mode"], r["devices"]): r for block in results["scaling"] for r in block["rows"]}
    assert set(scaled) == {("jax", "sharded", 1), ("jax", "sharded", 2), ("jax", "pmap", 1), ("jax", "pmap", 2),
                           ("torch", "ddp", 1), ("torch", "ddp", 2)}
    assert all(r["step"]["median_ms"] > 0 and r["batch"] == 2 * r["devices"] for r in scaled.values())
    assert all(r["efficiency"] == 1.0 for r in scaled.values() if r["devices"] == 1)
    assert all(r["efficiency"] == pytest.approx(r["samples_per_s"] / (2 * scaled[(b, m, 1)]["samples_per_s"]))
               for (b, m, n), r in scaled.items() if n == 2)
    report = (out / "README.md").read_text()
    assert "2d-b2-16x16" in report and "Data-parallel scaling" in report and "train step FLOPs" in report
    assert "efficiency = samples/s" in report and "one figure per precision for all backends" in report
    assert (out / "step_time.png").stat().st_size > 0 and (out / "scaling.png").stat().st_size > 0


def test_a_2_5d_case_times_the_model_it_configures(tmp_path: Path, capsys):
    """With data.context_slices the 2D model reads 2c+1 channels: the synthetic batch carries
    them (it had one, and the first step failed inside the framework), the T2 the centre one's."""
    pytest.importorskip("torch")
    from mrsynth.bench.session import synthetic_batch

    batch = synthetic_batch(2, [16, 16], channels=3)
    assert batch["t1"].shape == (2, 16, 16, 3) and batch["t2"].shape == batch["mask"].shape == (2, 16, 16, 1)
    np.testing.assert_allclose(batch["t2"], 0.5 * batch["t1"][..., 1:2] + 0.1, rtol=1e-6)
    raw = json.loads(json.dumps(TINY))
    raw["benchmark"].update(backends=["torch"], dims=[2], pipeline=False, inference=False, scaling=False)
    raw["data"].update(root=str(tmp_path / "phantom"), cache_dir=str(tmp_path / "cache"), context_slices=1)
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["benchmark", "--config", str(config), "--out", str(tmp_path / "report")]) == 0
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [c["model"]["in_channels"] for c in results["cases"]] == [3]
    assert [r["step"]["n"] for r in results["train"]] == [3]


def test_benchmark_rejects_a_bad_variant_in_one_line(tmp_path: Path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["benchmark", "--config", str(config), "--variants", "fp16", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fp16" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_gpu_collective_flags_append_and_never_override_the_user():
    from jax_impl.distributed import GPU_COLLECTIVE_FLAGS, add_gpu_collective_flags, with_flags

    flags, added = with_flags("--xla_force_host_platform_device_count=2", GPU_COLLECTIVE_FLAGS)
    assert flags.split() == ["--xla_force_host_platform_device_count=2", *GPU_COLLECTIVE_FLAGS]
    assert added == list(GPU_COLLECTIVE_FLAGS)
    mine = "--xla_gpu_enable_latency_hiding_scheduler=false"
    assert with_flags(mine, GPU_COLLECTIVE_FLAGS) == (mine, [])
    environ = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--a=1"}
    assert add_gpu_collective_flags(environ) == [] and environ["XLA_FLAGS"] == "--a=1"
