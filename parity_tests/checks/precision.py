"""Precision settings of one comparison and the conversions between numpy, torch and JAX at a precision."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch

from mrsynth.precision import get_precision

from jax_impl.precision import precision_scope as jax_precision_scope
from torch_ref.predict import channels_first_copy
from torch_ref.precision import autocast as torch_autocast, precision_scope as torch_precision_scope


def on_gpu() -> bool:
    return torch.cuda.is_available() and jax.default_backend() == "gpu"


def precision_note(precision: str) -> str:
    """What a precision setting means on this machine (for report rows)."""
    if precision == "tf32":
        return "jax default matmul precision, torch TF32 on" if on_gpu() else \
            "cpu: tf32 not applicable (same arithmetic as float32)"
    if precision == "bfloat16":
        return "jax compute dtype bfloat16 vs torch autocast bfloat16"
    if precision == "float64":
        return "jax_enable_x64 vs torch .double()"
    return "jax matmul precision 'highest', torch TF32 off" + ("" if on_gpu() else " (cpu: no-op)")


@contextlib.contextmanager
def precision_context(precision: str) -> Iterator[None]:
    """JAX x64 and matmul precision, torch TF32 switches, for the duration of one comparison."""
    with jax.enable_x64(get_precision(precision).activations == "float64"), \
            jax_precision_scope(precision), torch_precision_scope(precision):
        yield


def torch_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def at_precision(tree, precision: str):
    """float64: every floating leaf as a float64 host array (jit converts it under x64)."""
    if precision != "float64":
        return tree
    return jax.tree.map(lambda a: np.asarray(a, np.float64) if jnp.issubdtype(a.dtype, jnp.floating)
                        else np.asarray(a), tree)


def to_torch(x: np.ndarray, precision: str) -> torch.Tensor:
    """Channels-last numpy -> channels-first tensor on the parity device."""
    t = torch.from_numpy(channels_first_copy(x))
    return t.to(torch_device(), torch.float64 if precision == "float64" else torch.float32)


def from_torch(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t.detach().to("cpu", torch.float64).numpy(), 1, -1)


def autocast(precision: str) -> contextlib.AbstractContextManager:
    return torch_autocast(precision, torch_device().type)


def jax_input(x: np.ndarray, precision: str) -> jax.Array:
    return jnp.asarray(x, jnp.float64 if precision == "float64" else jnp.float32)
