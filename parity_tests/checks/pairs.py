"""The same network in both frameworks, its weights through the portable file.

The *source* framework initializes (and perturbs, so norms and biases are not their trivial
defaults) and exports with its own exporter; the other framework imports with its own importer.
A direction is "torch->jax" or "jax->torch".
"""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from mrsynth.config import ModelConfig
from mrsynth.parity.report import CheckResult
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES, ToleranceTable
from mrsynth.precision import get_precision
from mrsynth.weights import load_portable

from jax_impl import weights as jax_weights
from jax_impl.model import build_model as jax_build_model, model_structure as jax_model_structure
from jax_impl.weights import load_torch_into, model_to_torch
from torch_ref.layers import Dropout as TorchDropout
from torch_ref.model import build_model as torch_build_model
from torch_ref import weights as torch_weights
from torch_ref.weights import state_dict_to_numpy

from parity_tests.checks.precision import torch_device


DIRECTIONS = ("torch->jax", "jax->torch")


def perturb_torch(model: torch.nn.Module, seed: int) -> None:
    """Move biases, norm affines and BatchNorm statistics off their defaults (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(3)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif t.ndim == 1:
                base = 1.0 if name.endswith(".weight") else 0.0  # norm scales around 1
                t.copy_(base + 0.2 * torch.randn(t.shape, generator=gen))


def perturb_jax(model: nnx.Module, seed: int) -> None:
    """The JAX twin of :func:`perturb_torch`, on the NNX variables directly."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model)
    for path, var in nnx.to_flat_state(state):
        value = np.asarray(var.get_value())
        leaf = str(path[-1])
        if leaf == "num_batches_tracked":
            new = np.full_like(value, 3)
        elif leaf == "running_var":
            new = 0.5 + rng.random(value.shape)
        elif value.ndim == 1:
            new = (1.0 if leaf == "scale" else 0.0) + 0.2 * rng.standard_normal(value.shape)
        else:
            continue
        var.set_value(jnp.asarray(new, dtype=value.dtype))
    nnx.update(model, state)


@dataclass
class ModelPair:
    """The same network in both frameworks (float32, CPU/default device)."""

    cfg: ModelConfig
    torch_model: torch.nn.Module
    jax_model: nnx.Module
    direction: str
    weight_file: Path

    def tensors(self) -> dict[str, np.ndarray]:
        """The shared weights, canonical names and torch layout."""
        return state_dict_to_numpy(self.torch_model.state_dict())


def transfer_pair(cfg: ModelConfig, direction: str, work_dir: Path, seed: int = 0) -> ModelPair:
    """Initialize in the source framework, export its portable file, import it in the other."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{direction.replace('->', '_to_')}-{seed}.safetensors"
    if direction == "torch->jax":
        torch.manual_seed(seed)
        torch_model = torch_build_model(cfg)
        perturb_torch(torch_model, seed)
        torch_weights.save_weights(path, torch_model, cfg)
        jax_model, _, _ = jax_weights.load_weights(path)
    elif direction == "jax->torch":
        jax_model = jax_build_model(cfg, seed=seed)
        perturb_jax(jax_model, seed)
        jax_weights.save_weights(path, jax_model, cfg)
        torch_model, _, _ = torch_weights.load_weights(path)
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return ModelPair(cfg, torch_model.train(), jax_model, direction, path)


def round_trip_check(pair: ModelPair, work_dir: Path, tolerances: ToleranceTable = DEFAULT_TOLERANCES
                     ) -> CheckResult:
    """Destination exports again; the source's tensors must come back bit for bit."""
    back = work_dir / f"back-{pair.weight_file.name}"
    if pair.direction == "torch->jax":
        jax_weights.save_weights(back, pair.jax_model, pair.cfg)
    else:
        torch_weights.save_weights(back, pair.torch_model, pair.cfg)
    original, _, _ = load_portable(pair.weight_file)
    returned, _, _ = load_portable(back)
    worst = max((float(np.max(np.abs(returned[k].astype(np.float64) - original[k])))
                 if k in returned else float("inf")) for k in original)
    if returned.keys() != original.keys():
        worst = float("inf")
    return CheckResult("weights", f"{pair.direction} round trip", "max |diff|", worst,
                       tolerances["round_trip", "float32"], note=f"{len(original)} tensors")


# --- models at a precision ------------------------------------------------------------------
def torch_model_at(pair: ModelPair, precision: str) -> torch.nn.Module:
    """A copy of the torch model on the parity device, float64 for ``float64``."""
    model = copy.deepcopy(pair.torch_model).to(torch_device())
    return model.double() if precision == "float64" else model


def jax_model_at(pair: ModelPair, precision: str) -> nnx.Module:
    """A JAX model with the pair's weights and the precision's compute dtype.

    Build it outside ``precision_context("float64")``: under x64 every eager initializer op
    would compile anew. Its float32 state becomes float64 only where it enters a jitted
    function (:func:`at_precision`).
    """
    if get_precision(precision).activations == "float32":
        return pair.jax_model
    model = jax_model_structure(pair.cfg, compute_dtype=get_precision(precision).activations)
    load_torch_into(model, model_to_torch(pair.jax_model), pair.weight_file)
    return model


def set_mode(torch_model: torch.nn.Module, jax_model: nnx.Module, mode: str) -> None:
    """train: batch statistics, dropout off (its masks are framework RNG); eval: both off."""
    if mode == "eval":
        torch_model.eval()
        jax_model.eval()
        return
    torch_model.train()
    for module in torch_model.modules():
        if isinstance(module, TorchDropout):
            module.eval()
    jax_model.train()
    jax_model.set_attributes(deterministic=True, raise_if_not_found=False)


def torch_tensors(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Canonical tensors as float64 numpy (``state_dict_to_numpy`` rounds to float32)."""
    return {k: t.detach().to("cpu", torch.float64).numpy() for k, t in model.state_dict().items()}


def stats_only(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if "running_" in k or "num_batches" in k}


def params_only(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if "running_" not in k and "num_batches" not in k}


def inert_parameters(model: ModelConfig, names: Sequence[str]) -> set[str]:
    """Conv biases that feed a per-channel norm (batch, instance) directly.

    The norm subtracts each channel's mean, so their exact gradient is zero and AdamW turns the
    rounding noise of their computed gradient into +-lr steps: a random walk with no effect on
    the function, different in every run. Excluded from the update and parameter comparisons.
    """
    if model.norm not in ("batch", "instance"):
        return set()
    pattern = re.compile(r"^(encoders\.\d+|bottleneck|decoders\.\d+)\.conv[12]\.bias$")
    return {n for n in names if pattern.match(n)}
