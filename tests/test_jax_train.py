"""JaxEngine: learning, data parallelism (sharded 1 vs 4 devices, pmap), exact resume, backend I/O.

One reference run (4 devices, sharded, BatchNorm + dropout, checkpoint after step 2) is shared
by the comparisons to keep compile time down on a small CPU.
"""
from __future__ import annotations

from contextlib import closing

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from mrsynth.backend import GENERATOR  # noqa: E402
from mrsynth.config import Config, config_from_dict, save_config  # noqa: E402
from mrsynth.errors import CheckpointError  # noqa: E402
from mrsynth.schedule import lr_at  # noqa: E402
from jax_impl.backend import create_backend  # noqa: E402
from jax_impl.checkpoint import CheckpointStore  # noqa: E402
from jax_impl.losses import LOSSES, gaussian_window, l1_loss, ssim  # noqa: E402
from jax_impl.train import JaxEngine  # noqa: E402

STEPS, SAVE_AT = 4, 2
# Sharding changes the reduction order of the gradient all-reduce and BatchNorm statistics, so
# devices agree to float32 rounding, not bit for bit. A conv bias right before BatchNorm has a
# true gradient of 0: Adam would scale its rounding noise (~1e-9) up to lr-sized steps, so the
# tests use eps = 1e-3 (instead of 1e-8): real gradients here are ~1e-2, rounding noise is not.
# (1e-4 was enough with XLA:CPU's default LLVM -O2; under the tests' -O0 (conftest.py) that bias
# still drifted 6e-5 apart between 1 and 4 devices while every other weight agreed to 1e-7.)
DP_ATOL = 2e-5


def make_cfg(**train) -> Config:
    return config_from_dict({
        "model": {"depth": 1, "base_channels": 4, "channel_mults": [1, 2], "norm": "batch",
                  "dropout": 0.2, "residual": True},
        "data": {"patch_size": [8, 8]},
        "train": {"batch_size": 8, "steps": 20, "warmup_steps": 2, "lr": 1e-2, "eps": 1e-3,
                  "keep_checkpoints": 2, **train},
    })


def batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t1 = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)
        out.append({"t1": t1, "t2": (0.5 * t1 + 0.1).astype(np.float32), "mask": np.ones_like(t1)})
    return out


def params_of(engine: JaxEngine) -> dict:
    return engine.host_variables()


def assert_trees_close(a, b, atol: float) -> None:
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """4-device sharded run: metrics, final (params, stats), the step-2 predictor output, run dir."""
    run_dir = tmp_path_factory.mktemp("run")
    save_config(make_cfg(), run_dir / "config.yaml")
    engine = JaxEngine(make_cfg(), run_dir)
    assert engine.mesh.size == 4
    handles = []
    probe = batches(1, seed=9)[0]["t1"][:3, :7, :5]
    for step, batch in enumerate(batches(STEPS), start=1):
        handles.append(engine.train_step(batch))
        if step == SAVE_AT:
            engine.save_checkpoint(step, {"loader": {"epoch": 0, "index": step}, "best": 0.5}, is_best=True)
            at_save = engine.predictor()(probe)
    metrics = engine.fetch_metrics(handles)
    final = params_of(engine)
    engine.close()
    return {"metrics": metrics, "final": final, "at_save": at_save, "probe": probe, "run_dir": run_dir}


def test_metrics_are_host_floats_with_the_shared_schedule(reference):
    metrics = reference["metrics"]
    assert len(metrics) == STEPS and set(metrics[0]) == {"loss", "grad_norm", "lr", "l1"}
    cfg = make_cfg()
    for step, row in enumerate(metrics):
        assert row["lr"] == pytest.approx(lr_at(step, cfg.train), rel=1e-6)
        assert np.isfinite(row["loss"]) and row["grad_norm"] > 0


def test_one_device_matches_four_sharded_devices(reference, tmp_path):
    engine = JaxEngine(make_cfg(), tmp_path, devices=jax.devices()[:1])
    for batch in batches(STEPS):
        engine.train_step(batch)
    assert_trees_close(params_of(engine), reference["final"], DP_ATOL)
    engine.close()


def test_pmap_matches_sharded(reference, tmp_path):
    engine = JaxEngine(make_cfg(parallel="pmap"), tmp_path)
    handles = [engine.train_step(batch) for batch in batches(STEPS)]
    assert_trees_close(params_of(engine), reference["final"], DP_ATOL)
    pmap_loss = [m["loss"] for m in engine.fetch_metrics(handles)]
    np.testing.assert_allclose(pmap_loss, [m["loss"] for m in reference["metrics"]], rtol=1e-5)
    engine.close()


def test_resume_continues_exactly(reference, tmp_path):
    engine = JaxEngine(make_cfg(), reference["run_dir"])
    step, extra = engine.restore_checkpoint()
    assert step == SAVE_AT and extra == {"loader": {"epoch": 0, "index": SAVE_AT}, "best": 0.5}
    np.testing.assert_array_equal(engine.predictor()(reference["probe"]), reference["at_save"])
    for batch in batches(STEPS)[SAVE_AT:]:
        engine.train_step(batch)
    assert_trees_close(params_of(engine), reference["final"], atol=0.0)
    engine.close()
    with closing(JaxEngine(make_cfg(), tmp_path)) as fresh:
        assert fresh.restore_checkpoint() is None
    other = make_cfg()
    other.model.base_channels = 8
    # Closed as a run closes them: an engine's checkpoint managers hold orbax's background threads
    # and event loop, which should not outlive the test.
    with closing(JaxEngine(other, reference["run_dir"])) as mismatched:
        with pytest.raises(CheckpointError, match=r"last/2: checkpoint does not match this model"):
            mismatched.restore_checkpoint()


def test_a_training_engine_turns_on_the_compilation_cache(monkeypatch, tmp_path):
    """A user's second run of a model skips compiling its initializers and steps. The tests share
    a session cache, so the setting is checked with the engine stubbed (nothing compiles while
    the folder is switched) and then put back."""
    import jax_impl.backend
    from jax_impl.backend import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "jit"))
    monkeypatch.setattr(jax_impl.backend, "JaxEngine", lambda cfg, run_dir: (cfg, run_dir))
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        assert create_backend().create_engine(make_cfg(), tmp_path / "run")[1] == tmp_path / "run"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jit")
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


# orbax abandons a read it had started when the trees do not match; pytest reports that coroutine
# (outside pytest nothing but the CheckpointError reaches the user).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_checkpoint_of_another_layout_is_one_clear_error(tmp_path):
    """A checkpoint in the single-model layout of earlier versions does not load, in one line."""
    cfg = make_cfg()
    engine = JaxEngine(cfg, tmp_path)
    state = engine.single_copy_state()
    engine.close()
    generator = state["models"][GENERATOR]
    store = CheckpointStore(tmp_path / "checkpoints", keep=1)
    store.save(3, {"params": generator["params"], "batch_stats": generator["batch_stats"],
                   "opt_state": state["opt_states"][GENERATOR], "step": state["step"], "key": state["key"]},
               {"loader": {}}, is_best=False)
    store.wait()
    store.close()
    with pytest.raises(CheckpointError, match=r"last/3: checkpoint does not match this model") as info:
        JaxEngine(cfg, tmp_path).restore_checkpoint()
    assert "\n" not in str(info.value)


def test_the_step_runs_at_the_configured_matmul_precision(tmp_path):
    """train.precision reaches the compiled step (TF32 or not is a trace-time setting)."""
    seen = []

    def recording_l1(pred, batch, train):
        seen.append(jax.config.jax_default_matmul_precision)
        return l1_loss(pred, batch, train)

    LOSSES.register("recording_l1")(recording_l1)
    try:
        for precision in ("float32", "tf32"):
            cfg = make_cfg(precision=precision)
            cfg.train.loss = "recording_l1"
            engine = JaxEngine(cfg, tmp_path / precision, devices=jax.devices()[:1])
            engine.fetch_metrics([engine.train_step(batches(1)[0])])
            engine.close()
    finally:
        LOSSES.unregister("recording_l1")
    assert seen == ["highest", "default"]
    assert jax.config.jax_default_matmul_precision is None  # scoped to the step


def test_backend_loads_run_and_exported_weights(reference, tmp_path):
    backend = create_backend()
    run_dir, probe = reference["run_dir"], reference["probe"]
    np.testing.assert_allclose(backend.load_predictor(run_dir, which="best")(probe), reference["at_save"],
                               rtol=1e-6, atol=1e-6)
    out = tmp_path / "model.safetensors"
    backend.export_weights(run_dir, out, which="last")
    np.testing.assert_allclose(backend.load_predictor(out)(probe), reference["at_save"], rtol=1e-6, atol=1e-6)
    with pytest.raises(CheckpointError, match="expected a run directory"):
        backend.load_predictor(tmp_path / "weights.bin")


def test_loss_decreases_with_bf16_and_ssim(tmp_path):
    cfg = make_cfg(precision="bfloat16", loss="l1_ssim", ssim_data_range=4.0)
    cfg.model.norm, cfg.model.groups, cfg.model.dropout = "group", 2, 0.0
    engine = JaxEngine(cfg, tmp_path)
    batch = batches(1)[0]
    losses = [m["loss"] for m in engine.fetch_metrics([engine.train_step(batch) for _ in range(12)])]
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    assert {x.dtype for x in jax.tree.leaves(engine.host_variables()["params"])} == {np.dtype(np.float32)}
    engine.close()


def test_ssim_matches_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 10, 1)).astype(np.float32)
    y = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    w = gaussian_window().astype(np.float64)
    window = np.outer(w, w)

    def local_mean(a):
        return np.array([[[(a[b, i:i + 7, j:j + 7, 0] * window).sum() for j in range(4)] for i in range(6)]
                         for b in range(2)])

    c1, c2 = (0.01 * 4.0) ** 2, (0.03 * 4.0) ** 2
    mx, my = local_mean(x), local_mean(y)
    vx, vy, cxy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    expected = np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert float(ssim(jnp.asarray(x), jnp.asarray(y), 4.0)) == pytest.approx(expected, rel=1e-4)
    assert float(ssim(jnp.asarray(x), jnp.asarray(x), 4.0)) == pytest.approx(1.0, abs=1e-6)
