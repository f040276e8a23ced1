"""What a training run leaves for people who use TensorBoard and nnU-Net: a text log, versions and
the git commit in run.json, validation images, hparams and the config in TensorBoard, a model card."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from mrsynth.cli import main
from mrsynth.weights import load_portable
from mrsynth.training.logging import ERROR_WHITE, TEXT_LOG_FILE, preview_slices, preview_strip
from test_training_loop import tiny_overrides


def read_events(tb_dir: Path) -> list[Event]:
    """Every event of the TFRecord files in ``tb_dir`` (length, crc, payload, crc per record)."""
    events = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(Event.FromString(data[at + 12:at + 12 + length]))
            at += 12 + length + 4
    return events


@pytest.mark.slow
def test_a_run_logs_text_versions_and_tensorboard_images_hparams_config(tmp_path, capsys):
    sets = [arg for o in tiny_overrides(tmp_path) for arg in ("--set", o)]
    run = tmp_path / "run"
    assert main(["train", "-v", "--no-progress", "--backend", "torch", "--out", str(run), *sets]) == 0
    err = capsys.readouterr().err
    assert f"run directory: {run}" in err.splitlines()
    assert "step 2: loss" in err  # -v: every logged step on the terminal

    text_log = (run / TEXT_LOG_FILE).read_text()
    assert f"run directory: {run}" in text_log and "step 6: loss" in text_log and "step 3: val" in text_log
    assert "resolved config:" in text_log and " INFO " in text_log and " DEBUG " in text_log

    card = (run / "model.md").read_text()  # the exported weights' model card, also in their metadata
    assert "**Synthetic.**" in card and "**Limits**" in card
    assert load_portable(run / "model.safetensors")[2]["model_card"] == card

    info = json.loads((run / "run.json").read_text())
    assert info["mrsynth"]["version"] and len(info["mrsynth"]["git_sha"]) == 40
    assert isinstance(info["mrsynth"]["git_dirty"], bool)
    for library in ("scipy", "nibabel", "SimpleITK", "grain"):
        assert info["versions"][library], library

    events = read_events(run / "tb")
    values = [(e.step, v) for e in events if e.HasField("summary") for v in e.summary.value]
    val_subjects = [json.loads((run / "preprocessing.json").read_text())["subjects"]["val"][0]]
    images = {(step, v.tag): v.image for step, v in values if v.HasField("image")}
    assert set(images) == {(s, f"val_images/{subject}") for s in (3, 6) for subject in val_subjects}
    image = images[(6, f"val_images/{val_subjects[0]}")]
    assert (image.width, image.height) == (4 * 32, 32)  # four 32x32 panels side by side
    plugins = {v.metadata.plugin_data.plugin_name for _, v in values}
    assert {"hparams", "text"} <= plugins
    config_text = next(v for _, v in values if v.tag.startswith("config")).tensor.string_val[0].decode()
    assert "phantom_subjects: 4" in config_text and "base_channels: 4" in config_text


def test_preview_is_a_fixed_slice_with_fixed_windows():
    rng = np.random.default_rng(0)
    shape = (10, 12, 8)
    mask = np.zeros(shape, np.uint8)
    mask[2:8, 3:9, 1:5] = 1  # centre of the mask along axis 2: index 2 or 3 (mean 2.5 -> round 2)
    t1, t2 = rng.normal(size=shape), rng.normal(size=shape)
    slices = preview_slices(t1, t2, t2 + 0.1, mask, axis=2)
    np.testing.assert_array_equal(slices["t1"], np.rot90(t1[:, :, 2]))
    assert slices["t2"].shape == (12, 10)
    strip = preview_strip(slices)
    assert strip.shape == (12, 40) and strip.min() >= 0 and strip.max() <= 1
    inside = slices["mask"] > 0
    lo, hi = np.percentile(slices["t2"][inside], [0.5, 99.5])
    np.testing.assert_allclose(strip[:, 40 - 10:], np.clip(0.1 / (ERROR_WHITE * (hi - lo)), 0, 1), rtol=1e-5)
    assert np.all(strip[:, :30][np.tile(~inside, 3)] == 0)  # background black in T1, T2 and synthesized
    # the real T2 panel and the synthesized one share one window: a +0.1 shift shows as +0.1 / width
    np.testing.assert_allclose((strip[:, 20:30] - strip[:, 10:20])[inside & (strip[:, 20:30] < 1)
                                                                    & (strip[:, 10:20] > 0)],
                               0.1 / (hi - lo), rtol=1e-4)


def test_the_tensorboard_writer_leaves_torch_unloaded_and_importable(tmp_path):
    """A JAX run's logger must not pull in torch through tensorboardX (seconds of start-up); the
    writer still writes numpy images and scalars, and torch can be imported afterwards."""
    script = (
        "import sys, numpy as np\n"
        "from mrsynth.training.logging import summary_writer_class\n"
        f"writer = summary_writer_class()({str(tmp_path)!r})\n"
        "writer.add_scalar('train/loss', 0.5, 1)\n"
        "writer.add_image('val_images/a', np.zeros((4, 5), np.float32), 1, dataformats='HW')\n"
        "writer.close()\n"
        "print('torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.zeros(1).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["False", "torch.Size([1])"]
    events = read_events(tmp_path)
    assert any(v.tag == "train/loss" and v.simple_value == 0.5 for e in events for v in e.summary.value)
    assert any(v.tag == "val_images/a" and v.image.width == 5 for e in events for v in e.summary.value)
