"""Every exported weight file carries a compact model card, in its metadata and beside it as .md."""
from __future__ import annotations

import json

import numpy as np

from mrsynth.config import config_from_dict
from mrsynth.model_card import model_card, read_test_metrics
from mrsynth.weights import load_portable, save_portable

PREPROCESSING = {"mask": "given", "normalization": "zscore", "percentiles": [1.0, 99.0], "slice_axis": 2,
                 "min_foreground": 0.05, "t2_reference": {"offset": 1900.0, "scale": 1200.0},
                 "t2_range": [-0.95, 3.24], "subjects": {"train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"]}}


def _metadata(source: str = "phantom") -> dict:
    cfg = config_from_dict({"data": {"source": source, "context_slices": 1}})
    return {"framework": "jax", "run": "demo-jax-1", "checkpoint": "best", "step": 600,
            "summary": {"last_val": {"psnr": 21.6, "ssim": 0.83, "mae": 0.17}},
            "config": cfg.to_dict(), "preprocessing": PREPROCESSING}


def _summary(run_name: str, checkpoint: str = "best") -> dict:
    stats = {"mean": 22.4, "sd": 2.3, "ci_low": 20.8, "ci_high": 24.1, "n": 2, "ci_method": "bootstrap"}
    return {"split": "test", "subjects": ["e", "f"],
            "runs": [{"label": "jax", "run_dir": f"/elsewhere/{run_name}", "checkpoint": checkpoint}],
            "methods": {"jax": {"kind": "run", "metrics": {m: stats for m in ("psnr", "ssim", "mae")}}}}


def test_card_says_use_data_preprocessing_metrics_limits_and_synthetic():
    card = model_card(_metadata())
    for words in ("**Synthetic.**", "not for diagnosis", "**Intended use**", "**Training data**",
                  "3 training / 1 validation / 2 test subjects", "**Preprocessing**", "brain mask `given`",
                  "1 neighbouring slice(s)", "**Test metrics**: not evaluated on the test split yet",
                  "mrsynth evaluate --checkpoint demo-jax-1", "psnr 21.6", "**Limits**", "phantom"):
        assert words in card, words
    test = {"metrics": _summary("x")["methods"]["jax"]["metrics"], "n": 2, "split": "test"}
    with_test = model_card(_metadata("ixi"), test)
    assert "psnr: 22.4 dB [20.8, 24.1]" in with_test and "only 2 subject(s)" in with_test
    assert "phantom" not in with_test


def test_test_metrics_come_from_this_runs_own_evaluation(tmp_path):
    run = tmp_path / "demo-jax-1"
    (run / "eval_test").mkdir(parents=True)
    assert read_test_metrics(run, "best") is None
    (run / "eval_test" / "summary.json").write_text(json.dumps(_summary("demo-jax-1")))
    assert read_test_metrics(run, "best")["n"] == 2
    assert read_test_metrics(run, "last") is None  # another checkpoint was evaluated
    (run / "eval_test" / "summary.json").write_text(json.dumps(_summary("another-run")))
    assert read_test_metrics(run, "best") is None


def test_a_card_in_the_metadata_is_written_beside_the_weights(tmp_path):
    from mrsynth.config import ModelConfig

    tensors = {"head.weight": np.ones((1, 16, 1, 1), np.float32)}
    save_portable(tmp_path / "w.safetensors", tensors, ModelConfig(), {"model_card": "# card\n"})
    assert (tmp_path / "w.md").read_text() == "# card\n"
    assert load_portable(tmp_path / "w.safetensors")[2]["model_card"] == "# card\n"
    save_portable(tmp_path / "bare.safetensors", tensors, ModelConfig(), {"run": "x"})
    assert not (tmp_path / "bare.md").exists()
