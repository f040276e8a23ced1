"""The PyTorch backend object (:class:`mrsynth.backend.Backend`): engines, predictors, export."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mrsynth.backend import GENERATOR
from mrsynth.config import Config, ModelConfig, load_config
from mrsynth.errors import CheckpointError
from mrsynth import runs
from mrsynth.weights import model_source_kind
from torch_ref import checkpoint
from torch_ref.model import UNet
from torch_ref.predict import TorchPredictor
from torch_ref.train import TorchEngine
from torch_ref.weights import load_weights, save_weights


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_run_model(run_dir: Path, which: str) -> tuple[UNet, Config, dict[str, Any]]:
    """The generator U-Net of a torch run directory with its ``which`` checkpoint's weights (CPU)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / runs.CONFIG_FILE)
    path = checkpoint.find_checkpoint(run_dir, which)
    payload = checkpoint.read_checkpoint(path)
    model = UNet(cfg.model)
    try:
        model.load_state_dict(payload["models"][GENERATOR])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match {run_dir / runs.CONFIG_FILE} "
                              f"({str(exc).strip().splitlines()[0]})") from None
    return model.eval(), cfg, {"checkpoint_file": path.name, "step": int(payload["step"])}


class TorchBackend:
    name = "torch"

    def create_engine(self, cfg: Config, run_dir: Path) -> TorchEngine:
        return TorchEngine(cfg, run_dir)

    def load_predictor(self, source: Path, which: str = "best") -> TorchPredictor:
        """From a run directory (its best|last checkpoint) or a portable ``.safetensors`` file."""
        model_cfg: ModelConfig
        if model_source_kind(source) == "run":
            model, cfg, _ = load_run_model(Path(source), which)
            model_cfg = cfg.model
        else:
            model, model_cfg, _ = load_weights(Path(source))
        device = default_device()
        return TorchPredictor(model.to(device), model_cfg, device)

    def export_weights(self, run_dir: Path, out: Path, which: str = "best") -> None:
        """Write the portable weight file of a run's ``which`` checkpoint."""
        model, cfg, source = load_run_model(Path(run_dir), which)
        save_weights(Path(out), model, cfg.model, runs.portable_metadata(run_dir, which, **source))


def create_backend() -> TorchBackend:
    return TorchBackend()
