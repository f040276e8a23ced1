"""The named precisions: one vocabulary for training (``train.precision``), benchmark variants
and parity checks, so a name means the same arithmetic wherever it appears.

Each backend turns a name into its own switches (``jax_impl/precision.py``,
``torch_ref/precision.py``): the activations' dtype, and whether float32 matmuls and
convolutions may use TF32 (NVIDIA tensor cores; no effect on a CPU).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    activations: str  # dtype of the activations; parameters and the loss stay float32 (float64)
    tf32: bool  # float32 matmuls/convs may round their inputs to TF32 (JAX 'default', torch allow_tf32)
    meaning: str


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("float32", "float32", False,
              "float32 storage and compute, full-precision matmuls (JAX 'highest', torch TF32 off)"),
    Precision("tf32", "float32", True,
              "float32 storage, TF32 matmuls/convs on NVIDIA GPUs (same as float32 on a CPU)"),
    Precision("bfloat16", "bfloat16", True,
              "bfloat16 activations, float32 parameters and loss (JAX compute dtype, torch autocast)"),
    Precision("float64", "float64", False,
              "float64 everywhere (JAX x64, torch .double()): the parity reference only"),
)}

# What an engine can train in (and a benchmark variant can time); float64 is for parity only.
TRAINING_PRECISIONS = ("float32", "tf32", "bfloat16")


def get_precision(name: str) -> Precision:
    """The named precision; ValueError listing the names for an unknown one."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r} (choose from {', '.join(PRECISIONS)})") from None
