"""Config loading, overrides and validation errors (each names the key)."""
from pathlib import Path

import pytest
import yaml

from mrsynth.config import Config, load_config, save_config
from mrsynth.errors import ConfigError
from mrsynth.schedule import lr_at, warmup_cosine

REPO = Path(__file__).resolve().parents[1]


def test_demo_yaml_equals_builtin_defaults():
    assert load_config(REPO / "configs" / "demo.yaml") == load_config(None)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_loads(name):
    if name.startswith("bench_"):  # a run config plus a `benchmark:` section
        from mrsynth.bench.settings import load_bench_config

        settings, raw = load_bench_config(REPO / "configs" / name)
        assert settings.parsed_variants() and isinstance(raw, dict)
    else:
        assert isinstance(load_config(REPO / "configs" / name), Config)


def test_overrides_are_typed():
    cfg = load_config(None, ["train.lr=1e-3", "model.residual=true", "data.patch_size=[64,64]",
                             "train.steps=10", "train.warmup_steps=2"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.residual is True
    assert cfg.data.patch_size == (64, 64)


@pytest.mark.parametrize("override, message", [
    ("model.foo=1", "unknown config key 'model.foo'"),
    ("train.steps=abc", "train.steps: expected an integer"),
    ("model.norm=layer", "model.norm: 'layer' is not one of"),
    ("data.patch_size=[100,96]", "not a multiple of 2**depth"),
    ("data.patch_size=[128,112]", "larger than the phantom volume"),
    ("model.channel_mults=[1,2]", "needs depth + 1 = 4 entries"),
    ("model.groups=3", "3 groups do not divide 16 channels"),
    ("data.split_fractions=[0.5,0.5,0.5]", "sum to 1"),
    ("train.warmup_steps=600", "train.warmup_steps"),
    ("nosection", "expected section.key=value"),
    ("train.precision=bf16", "train.precision: 'bf16' is not one of float32, tf32, bfloat16"),
    ("train.compute_dtype=bfloat16", "train.compute_dtype: no longer a config key; use train.precision"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_a_config_with_the_removed_compute_dtype_fails_in_one_line_saying_what_to_use(tmp_path, capsys):
    from mrsynth.cli import main

    old = tmp_path / "old.yaml"
    old.write_text("train:\n  compute_dtype: bfloat16\n")
    assert main(["train", "--config", str(old)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {old}: train.compute_dtype: no longer a "
                                                            "config key; use train.precision (float32 | tf32 | bfloat16)"]


def test_3d_patch_needs_three_sizes():
    with pytest.raises(ConfigError, match="needs 3 numbers"):
        load_config(None, ["model.dims=3"])


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["model.dims=3", "data.patch_size=[16,32,32]", "model.depth=2",
                             "model.channel_mults=[1,2,4]"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["model"]["dims"] == 3


def test_schedule_warmup_then_cosine():
    cfg = load_config(None, ["train.steps=100", "train.warmup_steps=10", "train.lr=1.0",
                             "train.end_lr_factor=0.0"])
    t = cfg.train
    assert lr_at(0, t) == pytest.approx(0.1)
    assert lr_at(9, t) == pytest.approx(1.0)
    assert lr_at(10, t) == pytest.approx(1.0)
    assert lr_at(55, t) == pytest.approx(0.5)
    assert lr_at(100, t) == pytest.approx(0.0, abs=1e-12)
    # numpy-vectorized form agrees with the scalar form
    steps = [0, 5, 10, 40, 99]
    import numpy as np
    np.testing.assert_allclose(warmup_cosine(np.array(steps), 1.0, 10, 100, 0.0),
                               [lr_at(s, t) for s in steps])


def test_run_configs_get_absolute_folders(tmp_path):
    from mrsynth.config import with_absolute_paths

    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "m.csv").write_text("")
    cfg = load_config(None, ["data.root=data/x", "data.cache_dir=", "data.manifest=lists/m.csv", "run.root=runs"])
    out = with_absolute_paths(cfg, tmp_path)
    assert out.data.root == str(tmp_path / "data" / "x") and out.run.root == str(tmp_path / "runs")
    assert out.data.cache_dir == ""  # disabled stays disabled
    assert out.data.manifest == str(tmp_path / "lists" / "m.csv")
    # A manifest that is not there from the working directory stays relative (looked up under root).
    assert with_absolute_paths(load_config(None, ["data.manifest=m.csv"]), tmp_path).data.manifest == "m.csv"
