"""torch ``state_dict`` <-> the portable weight file (:mod:`mrsynth.weights`), and the weight
file -> an ONNX model.

Torch names and layouts are the canonical ones, so conversion is only a dtype change:
everything is float32 in the file; ``num_batches_tracked`` (int64 in torch) goes back to int64.

ONNX (``export --format onnx``, through torch's exporter whichever backend trained the run):
input ``t1``: (batch, in_channels, *spatial) float32, the T1 normalized as the run's
preprocessing contract says (the file's metadata); output ``t2``: (batch, 1, *spatial),
normalized T2. Batch and spatial sizes are dynamic; each spatial size must be a multiple of
2**depth, which the graph states (a size named ``8*height_div8`` is 8 times any positive
integer). The portable file's metadata (model config, preprocessing contract, run summary, model
card) is copied into the ONNX model's metadata_props, and the model card is written beside it.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrsynth.config import ModelConfig
from mrsynth.fileio import atomic_path
from mrsynth.model_card import card_of, write_card_beside
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


INPUT_NAME, OUTPUT_NAME = "t1", "t2"
SPATIAL_NAMES = {2: ("height", "width"), 3: ("depth", "height", "width")}


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The dynamo exporter logs and warns about things that do not concern a user (optional
    torchvision operators, deprecations inside torch); errors still raise."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_log.setLevel(level)


def export_onnx(weights: Path, out: Path) -> Path | None:
    """Write the ONNX model of a portable weight file to ``out`` (atomically) and the file's model
    card beside it; return the card's path (None when the weight file has no card)."""
    import onnx

    model, model_cfg, metadata = load_weights(Path(weights))
    multiple = 2 ** model_cfg.depth
    spatial = SPATIAL_NAMES[model_cfg.dims]
    example = torch.zeros(1, model_cfg.in_channels, *[2 * multiple] * model_cfg.dims)
    dynamic = {0: torch.export.Dim("batch", min=1),
               **{axis + 2: multiple * torch.export.Dim(f"{name}_div{multiple}", min=1)
                  for axis, name in enumerate(spatial)}}
    with _exporter_quiet(), torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes={"x": dynamic}, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {**metadata, "mrsynth_input": INPUT_NAME, "mrsynth_output": OUTPUT_NAME})
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    card = card_of(metadata)
    return None if card is None else write_card_beside(out, card)
