"""NNX state <-> canonical PyTorch ``state_dict`` (names and layouts), and the portable file.

The NNX tree mirrors the torch module names, so a parameter's canonical name is its NNX path
joined by dots with the leaf renamed (``kernel``/``scale`` -> ``weight``). Layout rules:
- Conv kernel (k..., I, O) <-> torch (O, I, k...): move the two channel axes to the front, swapped.
- ConvTranspose kernel with ``transpose_kernel=True`` is (k..., O, I) <-> torch (I, O, k...):
  the same axis permutation.
- Norm scale/bias, BatchNorm running stats and ``num_batches_tracked``: unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from mrsynth.config import ModelConfig
from mrsynth.errors import CheckpointError
from mrsynth.weights import check_against, load_portable, save_portable

from jax_impl.model import UNet, build_model

LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight"}


def _kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    n = kernel.ndim
    return np.transpose(kernel, (n - 1, n - 2, *range(n - 2)))


def _kernel_from_torch(weight: np.ndarray) -> np.ndarray:
    n = weight.ndim
    return np.transpose(weight, (*range(2, n), 1, 0))


def _flat_items(state: nnx.State) -> list[tuple[tuple[Any, ...], Any]]:
    return [(tuple(path), value) for path, value in nnx.to_flat_state(state)]


def canonical_name(path: tuple[Any, ...]) -> str:
    """NNX path (e.g. ('ups', 0, 'conv', 'kernel')) -> torch name ('ups.0.conv.weight')."""
    *parents, leaf = (str(p) for p in path)
    return ".".join([*parents, LEAF_TO_TORCH.get(leaf, leaf)])


def state_to_torch(state: nnx.State) -> dict[str, np.ndarray]:
    """All variables of an NNX state (params and batch stats) as a torch-layout numpy dict."""
    out: dict[str, np.ndarray] = {}
    for path, var in _flat_items(state):
        value = np.asarray(jax.device_get(var.get_value() if isinstance(var, nnx.Variable) else var))
        out[canonical_name(path)] = _kernel_to_torch(value) if path[-1] == "kernel" else value
    return out


def model_to_torch(model: UNet) -> dict[str, np.ndarray]:
    return state_to_torch(nnx.state(model))


def expected_shapes(model: UNet) -> dict[str, tuple[int, ...]]:
    """Canonical name -> torch-layout shape of every tensor the model holds."""
    return {name: tuple(v.shape) for name, v in model_to_torch(model).items()}


def load_torch_into(model: UNet, tensors: dict[str, np.ndarray], source: Path | str) -> None:
    """Set the model's variables from a torch-layout dict; errors name the parameter and ``source``."""
    expected = expected_shapes(model)
    # save_portable's np.ascontiguousarray stores 0-d scalars (num_batches_tracked) as shape (1,).
    tensors = {name: t.reshape(()) if expected.get(name) == () and t.shape == (1,) else t
               for name, t in tensors.items()}
    check_against(source, tensors, expected)
    state = nnx.state(model)
    for path, var in _flat_items(state):
        value = tensors[canonical_name(path)]
        if path[-1] == "kernel":
            value = _kernel_from_torch(value)
        var.set_value(jax.numpy.asarray(value, dtype=var.get_value().dtype))
    nnx.update(model, state)


def export_portable(model: UNet, model_cfg: ModelConfig, path: Path,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write the portable weight file (torch names/layout, float32) for ``model``."""
    save_portable(Path(path), model_to_torch(model), model_cfg,
                  {"framework": "jax", **(metadata or {})})


def import_portable(path: Path, model_cfg: ModelConfig | None = None) -> tuple[UNet, ModelConfig]:
    """Build a U-Net from a portable file (its own config, or ``model_cfg`` which must match)."""
    tensors, file_cfg, _ = load_portable(Path(path))
    if model_cfg is not None and model_cfg != file_cfg:
        raise CheckpointError(f"{path}: weights are for model config {file_cfg}, expected {model_cfg}")
    model = build_model(file_cfg)
    load_torch_into(model, tensors, path)
    return model, file_cfg
