"""The portable weight file both backends save for export and load for import.

A safetensors file: tensors under the canonical PyTorch ``state_dict`` names in PyTorch layout
(conv OIHW / OIDHW, ConvTranspose (in, out, k...)), float32; metadata (strings) holds the
format version, the model config as JSON, the producing framework, the metrics of the run
that produced it and its model card. Loading never executes code (safetensors holds only tensors and strings).
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.config import Config, ModelConfig, build_dataclass, recorded_config
from mrsynth.errors import CheckpointError
from mrsynth.fileio import atomic_path
from mrsynth.model_card import card_of, write_card_beside

FORMAT_NAME = "mrsynth-unet"
FORMAT_VERSION = 1


def save_portable(path: Path, tensors: dict[str, np.ndarray], model: ModelConfig,
                  metadata: dict[str, Any] | None = None) -> None:
    """Write tensors (canonical names, torch layout) plus the model config, atomically; a model
    card in ``metadata`` is also written beside the file (``<stem>.md``)."""
    from safetensors.numpy import save_file

    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "model_config": json.dumps(asdict(model)),
    }
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    arrays = {name: np.array(np.asarray(t, dtype=np.float32), order="C") for name, t in tensors.items()}  # keeps 0-d
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
    card = card_of(meta)
    if card is not None:
        write_card_beside(path, card)


def model_source_kind(source: Path) -> str:
    """What a predictor is loaded from: "run" (a run directory) or "weights" (a portable file)."""
    source = Path(source)
    if source.is_dir():
        return "run"
    if source.suffix == ".safetensors":
        return "weights"
    raise CheckpointError(f"{source}: expected a run directory or a .safetensors weight file")


def recorded_precision(meta: dict[str, str]) -> str:
    """The ``train.precision`` of the run a weight file comes from (``float32`` where its metadata
    holds no config): predict and evaluate compute in it, as validation did."""
    if "config" not in meta:
        return "float32"
    return (recorded_config(json.loads(meta["config"])).get("train") or {}).get("precision", "float32")


def load_portable(path: Path, expected: ModelConfig | None = None
                  ) -> tuple[dict[str, np.ndarray], ModelConfig, dict[str, str]]:
    """Read a portable weight file; check the format and version; return (tensors, model, metadata).

    With ``expected``, weights for another model config are an error (``conv3d`` aside: same weights).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            meta = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an mrsynth weight file (format={meta.get('format')!r})")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: weight format version {version} is not supported (this mrsynth reads {FORMAT_VERSION})"
        )
    try:
        model = model_config_from_json(meta["model_config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model_config metadata ({exc})") from None
    if expected is not None and replace(model, conv3d=expected.conv3d) != expected:  # conv3d: same weights
        raise CheckpointError(f"{path}: weights are for model config {model}, expected {expected}")
    return tensors, model, meta


def initial_tensors(cfg: Config) -> dict[str, np.ndarray] | None:
    """``train.init_weights``'s tensors, checked against ``model`` (None without a file): what
    both backends load into a new generator, and what training checks before its run folder exists."""
    if not cfg.train.init_weights:
        return None
    return load_portable(Path(cfg.train.init_weights), cfg.model)[0]


def model_config_from_json(text: str) -> ModelConfig:
    """Rebuild a ModelConfig from its JSON form (lists back to tuples, types checked)."""
    from mrsynth.errors import ConfigError

    try:
        return build_dataclass(ModelConfig, json.loads(text), "model.")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def conform(path: Path | str, tensors: dict[str, np.ndarray],
            expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """``tensors`` checked against the model's ``expected`` shapes, ready to load.

    A 0-d scalar (``num_batches_tracked``) stored as shape (1,) is taken as 0-d: writers that
    use ``np.ascontiguousarray`` (this module before it kept 0-d arrays, and others) store it so.
    Missing or extra keys and shape mismatches fail with a message naming the parameter.
    """
    tensors = {name: t.reshape(()) if expected.get(name) == () and t.shape == (1,) else t
               for name, t in tensors.items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{path}: missing parameter '{missing[0]}' ({len(missing)} missing)")
    if extra:
        raise CheckpointError(f"{path}: unexpected parameter '{extra[0]}' ({len(extra)} extra)")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(
                f"{path}: parameter '{name}' has shape {tuple(tensors[name].shape)}, model expects {tuple(shape)}"
            )
    return tensors
