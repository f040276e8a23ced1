"""The JAX backend object (:class:`mrsynth.backend.Backend`): engines, predictors, export.

Training engines and predictors keep their compiled programs on disk between processes
(:func:`enable_compilation_cache`).
"""
from __future__ import annotations

import os
from pathlib import Path

import jax

from mrsynth.backend import GENERATOR
from mrsynth.checkpoints import LoadedRun, checkpoint_dir
from mrsynth.config import Config, load_config
from mrsynth import runs
from mrsynth.precision import get_precision
from mrsynth.weights import model_source_kind, recorded_precision

from jax_impl.checkpoint import find_checkpoint, read_checkpoint
from jax_impl.model import in_compute_dtype, model_structure
from jax_impl.predict import JaxPredictor
from jax_impl.train import JaxEngine, abstract_train_state
from jax_impl.train_state import merge_model, split_model
from jax_impl.weights import load_weights, save_weights


CACHE_ENV = "MRSYNTH_JAX_CACHE_DIR"  # a folder, or "off"


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept: ``$MRSYNTH_JAX_CACHE_DIR`` ("off" or empty: nowhere),
    else ``$XDG_CACHE_HOME/mrsynth/jax`` (default ``~/.cache/mrsynth/jax``)."""
    setting = os.environ.get(CACHE_ENV)
    if setting is not None:
        return None if setting.strip().lower() in ("", "off") else Path(setting).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mrsynth" / "jax"


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache (before the first compile of the process to
    take effect); returns the folder, or None when it is off."""
    folder = compilation_cache_dir()
    if folder is not None and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


def load_run_model(run_dir: Path, which: str) -> LoadedRun:
    """The float32 generator of a JAX run directory with its ``which`` (best | last) checkpoint."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / runs.CONFIG_FILE)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                          abstract_train_state(cfg))
    path = find_checkpoint(run_dir, which)
    step, state, _ = read_checkpoint(path, target)
    graphdef, _ = split_model(model_structure(cfg.model))
    model = merge_model(graphdef, state["models"][GENERATOR])
    model.eval()
    return LoadedRun(model, cfg, step, str(path.relative_to(checkpoint_dir(run_dir))))


class JaxBackend:
    name = "jax"

    def create_engine(self, cfg: Config, run_dir: Path) -> JaxEngine:
        """A training engine; its compiled programs (the model's initializers, the train and
        validation steps) go to the persistent cache, so the next run of the same model starts
        without recompiling them (the initializers alone took 25 s to compile on 2 cores)."""
        enable_compilation_cache()
        return JaxEngine(cfg, run_dir)

    def load_predictor(self, source: Path, which: str = "best") -> JaxPredictor:
        """From a run directory (its best|last checkpoint) or a portable ``.safetensors`` file, in
        the run's training precision; compiled programs go to the persistent cache."""
        enable_compilation_cache()
        if model_source_kind(source) == "run":
            run = load_run_model(Path(source), which)
            model, model_cfg, precision = run.model, run.config.model, run.config.train.precision
        else:
            model, model_cfg, meta = load_weights(Path(source))
            precision = recorded_precision(meta)
        model = in_compute_dtype(model, model_cfg, get_precision(precision).activations)
        return JaxPredictor(model, model_cfg, precision)

    def export_weights(self, run_dir: Path, out: Path, which: str = "best") -> None:
        """Write the portable weight file of a run's ``which`` checkpoint."""
        run = load_run_model(Path(run_dir), which)
        save_weights(Path(out), run.model, run.config.model,
                     runs.portable_metadata(run_dir, which, **run.provenance()))


def create_backend() -> JaxBackend:
    return JaxBackend()
