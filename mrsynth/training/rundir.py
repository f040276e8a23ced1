"""Run directories: everything needed to reproduce, inspect and reuse a training run.

Layout (docs/ARCHITECTURE.md): config.yaml, run.json, metrics.jsonl, tb/, checkpoints/,
preprocessing.json (:mod:`mrsynth.data.contract`), model.safetensors.
"""
from __future__ import annotations

import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mrsynth.backend import library_versions
from mrsynth.config import Config, load_config, save_config
from mrsynth.data.contract import read_contract
from mrsynth.errors import MrsynthError
from mrsynth.fileio import atomic_write_text

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
PORTABLE_FILE = "model.safetensors"


def new_run_dir(cfg: Config, backend: str, run_dir: Path | None = None) -> Path:
    """Choose (and create) a fresh run directory; never reuse one that holds a run."""
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(cfg.run.root) / f"{cfg.run.name}-{backend}-{stamp}"
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).exists():
        raise MrsynthError(f"{run_dir}: already holds a run; use --resume {run_dir} or another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_run_start(run_dir: Path, cfg: Config, backend: str) -> None:
    """Record the resolved config and how/where the run was started."""
    save_config(cfg, run_dir / CONFIG_FILE)
    info = {
        "backend": backend,
        "status": "running",
        "command": " ".join(sys.argv),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(run_dir / RUN_FILE, info)


def update_run_info(run_dir: Path, **fields: Any) -> None:
    info = read_run_info(run_dir)
    info.update(fields)
    write_json(run_dir / RUN_FILE, info)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """run.json of a run directory; a clear error when the folder is not a run."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise MrsynthError(f"{run_dir}: not an mrsynth run directory (no {RUN_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MrsynthError(f"{path}: corrupt run file ({exc.msg})") from None


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> Config:
    """The resolved config a run was trained with (plus optional overrides)."""
    read_run_info(run_dir)
    return load_config(Path(run_dir) / CONFIG_FILE, overrides)


def portable_metadata(run_dir: Path, which: str, **details: Any) -> dict[str, Any]:
    """What a weight file exported from a run carries besides tensors and model config.

    ``details`` are the backend's facts about the checkpoint (step, file). A folder without
    run.json (an engine used outside the training loop) contributes only those.
    """
    run_dir = Path(run_dir)
    metadata: dict[str, Any] = {"checkpoint": which, **details}
    if not (run_dir / RUN_FILE).is_file():
        return metadata
    info = read_run_info(run_dir)
    return {
        "framework": info.get("backend"),
        "run": run_dir.name,
        "summary": info.get("summary", {}),
        "versions": info.get("versions", {}),
        "config": load_run_config(run_dir).to_dict(),
        "preprocessing": read_contract(run_dir).to_json(),
        **metadata,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
