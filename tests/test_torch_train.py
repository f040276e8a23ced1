"""The torch training engine: optax-style clipping, AdamW semantics, losses, exact resume, bf16."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mrsynth.backend import GENERATOR
from mrsynth.config import Config, config_from_dict
from mrsynth.schedule import lr_at
from torch_ref.losses import LOSSES, l1_loss, ssim, training_loss
from torch_ref.model import decayed_parameter_names
from torch_ref.objectives import clip_grad_global_norm_
from torch_ref.predict import channels_first_copy
from torch_ref.train import TorchEngine


def tiny_config(model: dict | None = None, **train) -> Config:
    return config_from_dict({
        "model": model or {"depth": 2, "base_channels": 4, "channel_mults": [1, 2, 2], "groups": 2},
        "data": {"patch_size": [16, 16]},
        "train": {"steps": 20, "warmup_steps": 3, "lr": 3e-3, **train},
    })


def batches(n: int, size: int = 4, shape=(16, 16), seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t1 = rng.standard_normal((size, *shape, 1)).astype(np.float32)
        out.append({"t1": t1, "t2": (0.5 * t1 + 0.2).astype(np.float32), "mask": np.ones_like(t1)})
    return out


def test_clipping_is_the_optax_formula():
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([[12.0]])
    norm = clip_grad_global_norm_([a, b], 1.0)
    assert norm.item() == pytest.approx(13.0)
    np.testing.assert_allclose(a.numpy(), [3 / 13, 4 / 13], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [[12 / 13]], rtol=1e-6)
    c = torch.tensor([0.3, 0.4])
    assert clip_grad_global_norm_([c], 1.0).item() == pytest.approx(0.5)
    np.testing.assert_array_equal(c.numpy(), np.float32([0.3, 0.4]))  # min(1, .) leaves it alone


def test_first_step_is_adamw_with_decay_mask_and_clipping(tmp_path):
    cfg = tiny_config(clip_norm=0.05, weight_decay=0.1)
    engine = TorchEngine(cfg, tmp_path)
    generator = engine.models[GENERATOR]
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    reference = copy.deepcopy(generator)
    batch = batches(1)[0]
    metrics = engine.train_step(batch)

    t1 = torch.from_numpy(channels_first_copy(batch["t1"]))
    t2 = torch.from_numpy(channels_first_copy(batch["t2"]))
    (reference(t1) - t2).abs().mean().backward()
    grads = {n: p.grad.double() for n, p in reference.named_parameters()}
    norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
    assert metrics["grad_norm"].item() == pytest.approx(norm.item(), rel=1e-5)
    scale = min(1.0, cfg.train.clip_norm / norm.item())
    lr, eps = lr_at(0, cfg.train), cfg.train.eps
    decayed = decayed_parameter_names(generator)
    assert metrics["lr"] == lr
    for name, p in generator.named_parameters():
        g = grads[name] * scale  # Adam's first step: m_hat = g, v_hat = g^2
        update = g / (g.abs() + eps)
        wd = cfg.train.weight_decay if name in decayed else 0.0
        expected = before[name].double() - lr * (update + wd * before[name].double())
        np.testing.assert_allclose(p.detach().double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    x = torch.randn(2, 1, 16, 16)
    assert ssim(x, x, 4.0).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, torch.randn(2, 1, 16, 16), 4.0).item() < 0.5
    v = torch.randn(1, 1, 9, 9, 9)
    assert ssim(v, v, 4.0).item() == pytest.approx(1.0, abs=1e-5)


def test_ssim_matches_a_direct_windowed_computation():
    """The separable valid-mode filter equals the explicit 7x7 Gaussian window at one position."""
    x, y = torch.rand(1, 1, 7, 7, dtype=torch.float64), torch.rand(1, 1, 7, 7, dtype=torch.float64)
    g = torch.exp(-((torch.arange(7.0, dtype=torch.float64) - 3) ** 2) / (2 * 1.5**2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy, cxy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2, (w * x * y).sum() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x.float(), y.float(), 1.0).item() == pytest.approx(expected.item(), rel=1e-4)


def test_l1_ssim_loss_adds_weighted_ssim_term():
    cfg = tiny_config(loss="l1_ssim", ssim_weight=0.3).train
    x, y = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    expected = (x - y).abs().mean() + 0.3 * (1 - ssim(x, y, cfg.ssim_data_range))
    loss, terms = training_loss(x, {"t1": x, "t2": y, "mask": torch.ones_like(y)}, cfg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["l1"].item() == pytest.approx((x - y).abs().mean().item(), rel=1e-6)
    assert terms["ssim"].item() == pytest.approx(ssim(x, y, cfg.ssim_data_range).item(), rel=1e-6)


@pytest.mark.parametrize("overrides", [{}, {"loss": "l1_ssim"}, {"precision": "bfloat16"}])
def test_loss_decreases(tmp_path, overrides):
    engine = TorchEngine(tiny_config(**overrides), tmp_path)
    batch = batches(1)[0]
    values = engine.fetch_metrics([engine.train_step(batch) for _ in range(12)])
    losses = [v["loss"] for v in values]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_steps_run_at_the_configured_precision(tmp_path):
    """train.precision's TF32 switches hold during the step and are restored after it."""
    seen = []

    def recording_l1(pred, batch, train):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return l1_loss(pred, batch, train)

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    LOSSES.register("recording_l1")(recording_l1)
    try:
        for precision in ("float32", "tf32"):
            cfg = tiny_config(precision=precision)
            cfg.train.loss = "recording_l1"
            TorchEngine(cfg, tmp_path / precision).train_step(batches(1)[0])
    finally:
        LOSSES.unregister("recording_l1")
    assert seen == [(False, False), (True, True)]
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.fixture
def restore_determinism():
    """Deterministic mode is process-wide in torch; give the rest of the session its setting back."""
    previous = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(previous)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, restore_determinism):
    """Deterministic mode with dropout and BatchNorm: save, restore in a fresh engine, continue."""
    cfg = tiny_config(deterministic=True, keep_checkpoints=1)
    cfg.model.dropout = 0.2
    cfg.model.norm = "batch"
    data = batches(6, seed=3)

    straight = TorchEngine(cfg, tmp_path / "straight")
    straight_metrics = straight.fetch_metrics([straight.train_step(b) for b in data])

    first = TorchEngine(cfg, tmp_path / "resumed")
    for b in data[:3]:
        first.train_step(b)
    first.save_checkpoint(3, {"loader": {"epoch": 1, "index": 7}}, is_best=False)
    del first
    second = TorchEngine(cfg, tmp_path / "resumed")
    torch.manual_seed(12345)  # resume must not depend on the global RNG at restore time
    assert second.restore_checkpoint() == (3, {"loader": {"epoch": 1, "index": 7}})
    resumed_metrics = second.fetch_metrics([second.train_step(b) for b in data[3:]])

    assert resumed_metrics == straight_metrics[3:]
    straight_state, resumed_state = (e.models[GENERATOR].state_dict() for e in (straight, second))
    for (name, a), b in zip(straight_state.items(), resumed_state.values()):
        assert torch.equal(a, b), name
    straight_adam, resumed_adam = (e.optimizers[GENERATOR].state for e in (straight, second))
    for a, b in zip(straight_adam.values(), resumed_adam.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_compiled_model_draws_the_engines_dropout_masks(tmp_path, monkeypatch):
    """train.torch_compile with dropout: the compiled model draws its masks from the engine's
    generator, as the eager one does, so their steps agree and both generators end in one state.
    Dynamo's eager backend: the graph capture is what is checked, not inductor's kernels."""
    import torch._dynamo

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compile_(fn, backend="eager"))
    torch._dynamo.reset()
    configs = [tiny_config(torch_compile=compiled) for compiled in (False, True)]
    for cfg in configs:
        cfg.model.dropout = 0.3
    eager, compiled = (TorchEngine(cfg, tmp_path / str(i)) for i, cfg in enumerate(configs))
    for batch in batches(3):
        expected, got = eager.train_step(batch), compiled.train_step(batch)
        assert float(got["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-5)
    assert compiled.dropout_generator.get_state().equal(eager.dropout_generator.get_state())


def test_restore_without_checkpoint_returns_none(tmp_path):
    assert TorchEngine(tiny_config(), tmp_path).restore_checkpoint() is None


@pytest.mark.slow
def test_compiled_optimizer_step_is_the_same_adamw_and_compiles_once(tmp_path):
    """train.torch_compile_optimizer (benchmark switch `compileopt`): clipping + AdamW compiled
    into one function; the warmup changes the lr every update without recompiling. The smallest
    U-Net (16 parameter tensors, not 46) halves inductor's first compile (measured 58 s -> 28 s)."""
    from torch._dynamo.utils import counters

    smallest = {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "norm": "none"}
    eager, compiled = TorchEngine(tiny_config(smallest), tmp_path / "e"), TorchEngine(
        tiny_config(smallest, torch_compile_optimizer=True), tmp_path / "c")
    steps = batches(4)
    graphs = []
    for batch in steps:
        expected, got = eager.train_step(batch), compiled.train_step(batch)
        for key in ("loss", "grad_norm", "lr"):
            assert float(got[key]) == pytest.approx(float(expected[key]), rel=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    assert len({lr_at(i, compiled.cfg.train) for i in range(4)}) >= 3 and graphs[0] == graphs[-1]
    for (name, p), q in zip(eager.models[GENERATOR].named_parameters(), compiled.models[GENERATOR].parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
