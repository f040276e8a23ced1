"""A named precision (:mod:`mrsynth.precision`) in JAX: the activations' dtype is the model's
``compute_dtype``; TF32 or not is the default matmul precision ('default' or 'highest').

The matmul precision is read when a function is traced and is part of jit's cache key, so
every call of a jitted function that may compile or hit the cache runs inside the same scope.
"""
from __future__ import annotations

import contextlib

import jax

from mrsynth.precision import get_precision


def matmul_precision(name: str) -> str:
    """'default' (TF32 on NVIDIA GPUs) or 'highest' (full float32) for the named precision."""
    return "default" if get_precision(name).tf32 else "highest"


def precision_scope(name: str) -> contextlib.AbstractContextManager:
    """The named precision's matmul/conv precision for the calls inside the ``with`` block."""
    return jax.default_matmul_precision(matmul_precision(name))
