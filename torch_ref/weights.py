"""torch ``state_dict`` <-> the portable weight file (:mod:`mrsynth.weights`).

Torch names and layouts are the canonical ones, so conversion is only a dtype change:
everything is float32 in the file; ``num_batches_tracked`` (int64 in torch) goes back to int64.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrsynth.config import ModelConfig
from mrsynth.weights import check_against, load_portable, save_portable
from torch_ref.model import UNet

FRAMEWORK = "torch"


def state_dict_to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Canonical name -> float32 numpy array (a host copy)."""
    return {name: t.detach().to("cpu", torch.float32).clone().numpy() for name, t in state.items()}


def save_weights(path: Path, model: nn.Module, model_cfg: ModelConfig,
                 metadata: dict[str, Any] | None = None) -> None:
    """Write ``model``'s parameters and buffers as a portable weight file (atomically)."""
    meta = {"framework": FRAMEWORK, "torch_version": torch.__version__, **(metadata or {})}
    save_portable(Path(path), state_dict_to_numpy(model.state_dict()), model_cfg, meta)


def load_state_into(model: nn.Module, tensors: dict[str, np.ndarray], source: Path | str) -> None:
    """Copy portable tensors into ``model``; a mismatch raises CheckpointError naming the parameter."""
    current = model.state_dict()
    # save_portable's np.ascontiguousarray turns 0-d scalars (num_batches_tracked) into shape (1,).
    tensors = {
        name: t.reshape(()) if name in current and current[name].ndim == 0 and t.shape == (1,) else t
        for name, t in tensors.items()
    }
    check_against(source, tensors, {name: tuple(t.shape) for name, t in current.items()})
    converted = {
        name: torch.from_numpy(np.asarray(tensors[name])).to(dtype=t.dtype)
        for name, t in current.items()
    }
    model.load_state_dict(converted, strict=True)


def load_weights(path: Path) -> tuple[UNet, ModelConfig, dict[str, str]]:
    """Build the U-Net described by a portable file and load its weights (CPU, eval mode)."""
    tensors, model_cfg, meta = load_portable(Path(path))
    model = UNet(model_cfg)
    load_state_into(model, tensors, path)
    return model.eval(), model_cfg, meta
