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
from mrsynth.weights import conform, load_portable, save_portable

from jax_impl.model import model_structure

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


def model_to_torch(model: nnx.Module) -> dict[str, np.ndarray]:
    return state_to_torch(nnx.state(model))


def expected_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Canonical name -> torch-layout shape of every tensor the model holds (from shapes alone,
    so it also works on a model being traced, e.g. under ``jax.eval_shape``)."""
    shapes = {}
    for path, var in _flat_items(nnx.state(model)):
        shape = tuple((var.get_value() if isinstance(var, nnx.Variable) else var).shape)
        shapes[canonical_name(path)] = (shape[-1], shape[-2], *shape[:-2]) if path[-1] == "kernel" else shape
    return shapes


def load_torch_into(model: nnx.Module, tensors: dict[str, np.ndarray], source: Path | str) -> None:
    """Set the model's variables from a torch-layout dict; errors name the parameter and ``source``."""
    tensors = conform(source, tensors, expected_shapes(model))
    state = nnx.state(model)
    for path, var in _flat_items(state):
        value = tensors[canonical_name(path)]
        if path[-1] == "kernel":
            value = _kernel_from_torch(value)
        var.set_value(jax.numpy.asarray(value, dtype=var.get_value().dtype))
    nnx.update(model, state)


def save_weights(path: Path, model: nnx.Module, model_cfg: ModelConfig,
                 metadata: dict[str, Any] | None = None) -> None:
    """Write ``model``'s parameters and batch statistics as a portable weight file (atomically)."""
    save_portable(Path(path), model_to_torch(model), model_cfg, {"framework": "jax", **(metadata or {})})


def load_weights(path: Path, model_cfg: ModelConfig | None = None
                 ) -> tuple[nnx.Module, ModelConfig, dict[str, str]]:
    """The network a portable file describes, with its weights, in eval mode: (model, config, metadata).

    With ``model_cfg``, a file for another model config is an error.
    """
    tensors, file_cfg, meta = load_portable(Path(path), model_cfg)
    model = model_structure(file_cfg)
    load_torch_into(model, tensors, path)
    model.eval()
    return model, file_cfg, meta
