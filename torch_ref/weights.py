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
from mrsynth.weights import conform, load_portable, save_portable
from torch_ref.model import build_model

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
    tensors = conform(source, tensors, {name: tuple(t.shape) for name, t in current.items()})
    converted = {
        name: torch.from_numpy(np.asarray(tensors[name])).to(dtype=t.dtype)
        for name, t in current.items()
    }
    model.load_state_dict(converted, strict=True)


def load_weights(path: Path, model_cfg: ModelConfig | None = None
                 ) -> tuple[nn.Module, ModelConfig, dict[str, str]]:
    """The network a portable file describes, with its weights, in eval mode on the CPU:
    (model, config, metadata). With ``model_cfg``, a file for another model config is an error."""
    tensors, file_cfg, meta = load_portable(Path(path), model_cfg)
    model = build_model(file_cfg)
    load_state_into(model, tensors, path)
    return model.eval(), file_cfg, meta
