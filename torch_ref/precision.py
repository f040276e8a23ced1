"""A named precision (:mod:`mrsynth.precision`) in PyTorch: TF32 switches and bf16 autocast.

TF32 uses the legacy ``allow_tf32`` flags for cuBLAS matmuls and cuDNN convolutions (torch
refuses a mix of the legacy and the newer ``fp32_precision`` API in one process). The flags are
process-wide, so they are set for the duration of a ``with`` block and restored after.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mrsynth.precision import get_precision


@contextlib.contextmanager
def precision_scope(name: str) -> Iterator[None]:
    """TF32 for matmuls and convolutions on or off as the named precision says, restored after."""
    tf32 = get_precision(name).tf32
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(name: str, device_type: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``bfloat16``; nothing for the float32/float64 precisions."""
    if get_precision(name).activations != "bfloat16":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)
