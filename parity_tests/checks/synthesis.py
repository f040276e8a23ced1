"""Whole-volume synthesis through the shared inference, and trained states as portable files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mrsynth.config import Config, ModelConfig
from mrsynth.inference.volume import synthesize_volume
from mrsynth.parity.metrics import psnr
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES, ToleranceTable

from jax_impl.backend import JaxBackend
from jax_impl import weights as jax_weights
from jax_impl.model import model_structure as jax_model_structure
from jax_impl.weights import load_torch_into
from torch_ref.backend import TorchBackend
from torch_ref.model import build_model as torch_build_model
from torch_ref import weights as torch_weights
from torch_ref.weights import load_state_into

from parity_tests.checks.precision import precision_context
from parity_tests.checks.training import TrainTrace


def synthesis_check(weight_file: Path, t1: np.ndarray, cfg: Config, case: str,
                    tolerances: ToleranceTable = DEFAULT_TOLERANCES) -> CheckResult:
    """Both backends load one portable file (their user path) and synthesize the same volume."""
    with precision_context("float32"):
        jax_out = synthesize_volume(t1, JaxBackend().load_predictor(weight_file), cfg.data, cfg.eval)
        torch_out = synthesize_volume(t1, TorchBackend().load_predictor(weight_file), cfg.data, cfg.eval)
    return CheckResult("synthesis", case, "PSNR(jax vs torch) dB", psnr(jax_out, torch_out),
                       tolerances["synth_psnr", "float32"], higher_is_better=True,
                       note=f"volume {tuple(t1.shape)}, dims {cfg.model.dims}")


def export_trained(trace: TrainTrace, cfg: ModelConfig, source: str, path: Path) -> Path:
    """A trained state as a portable file written by the framework that trained it."""
    tensors = trace.snapshots[max(trace.snapshots)]
    if source == "jax":
        model = jax_model_structure(cfg)
        load_torch_into(model, tensors, "trained state")
        jax_weights.save_weights(path, model, cfg)
    else:
        model = torch_build_model(cfg)
        load_state_into(model, tensors, "trained state")
        torch_weights.save_weights(path, model, cfg)
    return path
