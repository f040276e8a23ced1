"""The two training engines agree step by step on identical batches from the shared pipeline.

One run per configuration feeds every check: the first AdamW update (warmup-cosine schedule,
global-norm clipping, decay mask), BatchNorm running statistics after a few steps, the loss
at each of 50 steps and the final parameters; the trained weights, exported by the framework
that trained them, then synthesize whole volumes in both backends (PSNR >= 60 dB).
Tolerances: ``mrsynth/parity/tolerances.py`` (measured values and margins are written there).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from mrsynth.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig
from mrsynth.parity.report import CheckResult

from parity_tests import checks

STEPS = 50
TINY = dict(base_channels=4, groups=2)
RUNS = {
    # the demo's architecture, scaled down: GroupNorm, transposed-conv up, max-pool down, ReLU
    "2d-group-l1": Config(
        data=DataConfig(patch_size=(32, 32), rotate_deg=5.0, flip_prob=0.5),
        model=ModelConfig(dims=2, depth=2, channel_mults=(1, 2, 4), norm="group", **TINY),
        train=TrainConfig(steps=STEPS, batch_size=4, lr=2e-3, warmup_steps=5, clip_norm=1.0, loss="l1"),
    ),
    # BatchNorm + every non-default option, SSIM in the loss, clipping active at every step,
    # weight decay large enough to show in the first update (a wrong decay mask fails it);
    # eps 1e-6 keeps this smooth model in the tight "smooth" trajectory regime (tolerances.py).
    "2d-batch-l1ssim-clipped": Config(
        data=DataConfig(patch_size=(32, 32), flip_prob=0.5),
        model=ModelConfig(dims=2, depth=1, channel_mults=(1, 2), norm="batch", upsample="resize_conv",
                          downsample="conv", residual=True, activation="leaky_relu", **TINY),
        train=TrainConfig(steps=STEPS, batch_size=4, lr=2e-3, warmup_steps=5, clip_norm=0.02,
                          weight_decay=0.05, eps=1e-6, loss="l1_ssim"),
    ),
    "3d-instance-l1": Config(
        data=DataConfig(patch_size=(16, 16, 16), patches_per_volume=8),
        model=ModelConfig(dims=3, depth=1, channel_mults=(1, 2), norm="instance", activation="silu", **TINY),
        train=TrainConfig(steps=STEPS, batch_size=2, lr=2e-3, warmup_steps=5, clip_norm=1.0, eps=1e-6,
                          loss="l1"),
        eval=EvalConfig(inference_batch=4, patch_overlap=0.5),
    ),
}


@dataclass
class Outcome:
    cfg: Config
    rows: list[CheckResult]
    traces: dict[str, checks.TrainTrace]


@pytest.fixture(scope="module", params=sorted(RUNS))
def outcome(request, phantom_volumes, tmp_path_factory) -> Outcome:
    name = request.param
    cfg = RUNS[name]
    work = tmp_path_factory.mktemp(name)
    batches = checks.loader_batches(phantom_volumes, cfg, STEPS)
    pair = checks.transfer_pair(cfg.model, "torch->jax", work)  # torch's init, through the file
    rows, jax_trace, torch_trace = checks.training_checks(pair.tensors(), cfg, batches, work, name)
    return Outcome(cfg, rows, {"jax": jax_trace, "torch": torch_trace})


def _assert(rows: list[CheckResult]) -> None:
    assert rows
    failed = [r.describe() for r in rows if not r.passed]
    assert not failed, "\n".join(failed)


def test_first_adamw_update_agrees(outcome):
    rows = [r for r in outcome.rows if r.check == "adamw_step"]
    _assert(rows)
    if outcome.cfg.train.clip_norm < 0.1:
        assert "clipping active" in rows[0].note, rows[0].note


def test_batchnorm_running_statistics_agree(outcome):
    if outcome.cfg.model.norm != "batch":
        pytest.skip("no BatchNorm in this configuration")
    _assert([r for r in outcome.rows if r.check == "bn_stats"])


def test_loss_curves_and_final_parameters_agree(outcome):
    rows = [r for r in outcome.rows if r.check == "trajectory"]
    _assert(rows)
    losses = [m["loss"] for m in outcome.traces["torch"].metrics]
    assert len(losses) == STEPS and losses[-1] < losses[0]  # it trained, so the comparison means something


@pytest.mark.parametrize("trained_by", ["jax", "torch"])
def test_synthesized_volumes_agree_from_cross_loaded_weights(outcome, trained_by, phantom_volumes, tmp_path):
    cfg = outcome.cfg
    path = checks.export_trained(outcome.traces[trained_by], cfg.model, trained_by, tmp_path / "w.safetensors")
    _assert([checks.synthesis_check(path, phantom_volumes[1].t1, cfg, f"trained by {trained_by}")])
