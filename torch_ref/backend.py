"""The PyTorch backend object (:class:`mrsynth.backend.Backend`): engines, predictors, export."""
from __future__ import annotations

from pathlib import Path

import torch

from mrsynth.backend import GENERATOR
from mrsynth.checkpoints import LoadedRun, checkpoint_dir
from mrsynth.config import Config, load_config
from mrsynth.errors import CheckpointError
from mrsynth import runs
from mrsynth.weights import model_source_kind, recorded_precision
from torch_ref import checkpoint
from torch_ref.model import build_model
from torch_ref.predict import TorchPredictor
from torch_ref.train import TorchEngine
from torch_ref.weights import load_weights, save_weights


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_run_model(run_dir: Path, which: str) -> LoadedRun:
    """The generator of a torch run directory with its ``which`` (best | last) checkpoint (CPU)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / runs.CONFIG_FILE)
    path = checkpoint.find_checkpoint(run_dir, which)
    payload = checkpoint.read_checkpoint(path)
    model = build_model(cfg.model)
    try:
        model.load_state_dict(payload["models"][GENERATOR])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match {run_dir / runs.CONFIG_FILE} "
                              f"({str(exc).strip().splitlines()[0]})") from None
    return LoadedRun(model.eval(), cfg, int(payload["step"]), str(path.relative_to(checkpoint_dir(run_dir))))


class TorchBackend:
    name = "torch"

    def create_engine(self, cfg: Config, run_dir: Path) -> TorchEngine:
        return TorchEngine(cfg, run_dir)

    def load_predictor(self, source: Path, which: str = "best") -> TorchPredictor:
        """From a run directory (its best|last checkpoint) or a portable ``.safetensors`` file, in
        the run's training precision."""
        if model_source_kind(source) == "run":
            run = load_run_model(Path(source), which)
            model, model_cfg, precision = run.model, run.config.model, run.config.train.precision
        else:
            model, model_cfg, meta = load_weights(Path(source))
            precision = recorded_precision(meta)
        device = default_device()
        return TorchPredictor(model.to(device), model_cfg, device, precision)

    def export_weights(self, run_dir: Path, out: Path, which: str = "best") -> None:
        """Write the portable weight file of a run's ``which`` checkpoint."""
        run = load_run_model(Path(run_dir), which)
        save_weights(Path(out), run.model, run.config.model,
                     runs.portable_metadata(run_dir, which, **run.provenance()))


def create_backend() -> TorchBackend:
    return TorchBackend()
