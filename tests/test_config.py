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
    ("data.normalization=nyquist", "data.normalization: 'nyquist' is not one of"),
    ("data.bias_field=1.5", "data.bias_field: must be in [0, 1]"),
    ("data.contrast_range=1.0", "data.contrast_range: must be in [0, 1)"),
    ("data.nyul_t1_landmarks=[0,1]", "data.nyul_t1_landmarks: only used with data.normalization=nyul"),
    ("model.arch=u-net", "model.arch: must be an architecture name"),
    ("model.arch=''", "model.arch: must be an architecture name"),
    ("train.precision=bf16", "train.precision: 'bf16' is not one of float32, tf32, bfloat16"),
    ("train.compute_dtype=bfloat16", "train.compute_dtype: no longer a config key; use train.precision"),
    ("train.jax_conv3d=native", "train.jax_conv3d: no longer a config key; use model.conv3d (auto | stacked2d | "),
    ("model.conv3d=cudnn", "model.conv3d: 'cudnn' is not one of auto, stacked2d, native"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


STANDARD_SCALE = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize("overrides, message", [
    (["data.percentiles=[15,99]"], "data.percentiles: nyul needs [low < 10, high > 90]"),
    ([f"data.nyul_t1_landmarks={STANDARD_SCALE}"], "set both or neither"),
    ([f"data.nyul_t1_landmarks={STANDARD_SCALE[:5]}", f"data.nyul_t2_landmarks={STANDARD_SCALE}"],
     "data.nyul_t1_landmarks: needs 11 increasing values"),
    ([f"data.nyul_t1_landmarks={STANDARD_SCALE}", f"data.nyul_t2_landmarks={STANDARD_SCALE[::-1]}"],
     "data.nyul_t2_landmarks: needs 11 increasing values"),
])
def test_bad_nyul_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.normalization=nyul", *overrides])
    assert message in str(info.value)


def test_new_normalizations_and_augmentations_load():
    for method in ("fcm", "whitestripe", "nyul", "kde"):
        assert load_config(None, [f"data.normalization={method}"]).data.normalization == method
    cfg = load_config(None, ["data.normalization=nyul", f"data.nyul_t1_landmarks={STANDARD_SCALE}",
                             f"data.nyul_t2_landmarks={STANDARD_SCALE}", "data.bias_field=0.3",
                             "data.contrast_range=0.2"])
    assert cfg.data.nyul_t2_landmarks == tuple(STANDARD_SCALE) and cfg.data.bias_field == 0.3


def test_any_architecture_name_passes_config_validation():
    """Names are checked against the backends' registries when a model is built, not here."""
    assert load_config(None, ["model.arch=my_net"]).model.arch == "my_net"


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


def test_context_slices_set_the_input_channels(tmp_path):
    cfg = load_config(None, ["data.context_slices=2"])
    assert cfg.model.in_channels == 5 and load_config(None).model.in_channels == 1
    save_config(cfg, tmp_path / "config.yaml")  # a resolved run config states in_channels: it reloads
    assert load_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(ConfigError, match="data.context_slices"):
        load_config(None, ["data.context_slices=1", "model.dims=3", "data.patch_size=[16,16,16]"])
    with pytest.raises(ConfigError, match="data.context_slices"):
        load_config(None, ["data.context_slices=-1"])
    with pytest.raises(ConfigError, match="model.in_channels: not a user key"):
        load_config(None, ["data.context_slices=1", "model.in_channels=1"])


def test_a_weight_file_config_from_before_train_precision_still_reads():
    """Weight files exported before train.precision record train.compute_dtype: predict reads them."""
    from mrsynth.config import config_from_dict, recorded_config

    old = {"train": {"compute_dtype": "bfloat16", "steps": 70}}
    assert config_from_dict(recorded_config(old)).train.precision == "bfloat16"
    assert config_from_dict(recorded_config({"train": {"steps": 70}})).train.precision == "float32"
    with pytest.raises(ConfigError, match="train.compute_dtype: no longer a config key"):
        config_from_dict(old)  # a user's own YAML is still told the new key


def test_a_weight_file_config_from_before_model_conv3d_still_reads():
    from mrsynth.config import config_from_dict, recorded_config

    old = {"train": {"jax_conv3d": "native"}, "model": {"dims": 3}, "data": {"patch_size": [16, 16, 16]}}
    assert config_from_dict(recorded_config(old)).model.conv3d == "native"
    assert config_from_dict(recorded_config({})).model.conv3d == "auto"
