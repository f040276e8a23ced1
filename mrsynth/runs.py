"""Run directories: everything needed to reproduce, inspect and reuse a training run.

Layout (docs/ARCHITECTURE.md): config.yaml, run.json, metrics.jsonl, tb/, checkpoints/,
preprocessing.json (:mod:`mrsynth.data.contract`), model.safetensors.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mrsynth
from mrsynth.backend import library_versions
from mrsynth.config import Config, load_config, save_config
from mrsynth.data.contract import read_contract
from mrsynth.errors import MrsynthError
from mrsynth.fileio import atomic_write_text, reporting_disk_full, sha256_of
from mrsynth.model_card import CARD_KEY, model_card, read_test_metrics

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
PORTABLE_FILE = "model.safetensors"
LOCK_FILE = ".lock"


def new_run_dir(cfg: Config, backend: str, run_dir: Path | None = None) -> Path:
    """Choose, create and lock a fresh run directory; never reuse one that holds a run.

    The default name gets a ``-2``, ``-3``... suffix when another run took it in the same second
    (the lock decides atomically which run gets a name).
    """
    if run_dir is not None:
        run_dir = Path(run_dir)
        if (run_dir / RUN_FILE).exists():
            raise MrsynthError(f"{run_dir}: already holds a run; use --resume {run_dir} or another --run-dir")
        lock_run_dir(run_dir)
        return run_dir
    base = Path(cfg.run.root) / f"{cfg.run.name}-{backend}-{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1, 1000):
        candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        if (candidate / RUN_FILE).exists() or not _try_lock(candidate):
            continue
        if (candidate / RUN_FILE).exists():  # finished between the check and the lock
            unlock_run_dir(candidate)
            continue
        return candidate
    raise MrsynthError(f"{base}: no free run name (999 runs started in this second?)")


def _lock_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()})


def _holder(lock: Path) -> dict[str, Any] | None:
    """The lock's owner (pid, host); None when the lock is gone or unreadable (half-written)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _is_stale(holder: dict[str, Any] | None) -> bool:
    """A lock whose process is gone on this host (another host's lock is never judged stale)."""
    if holder is None or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


def _try_lock(run_dir: Path) -> bool:
    """Take ``run_dir``'s lock (O_CREAT|O_EXCL; a stale one is taken over); False when held."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        with reporting_disk_full(lock):
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = _holder(lock)
        if not _is_stale(holder):
            return False
        aside = lock.with_name(f"{LOCK_FILE}.{os.getpid()}.stale")
        os.replace(lock, aside)
        if _holder(aside) != holder:  # another process took it over first: give it back
            os.replace(aside, lock)
            return False
        aside.unlink()
        return _try_lock(run_dir)
    with reporting_disk_full(lock), os.fdopen(fd, "w") as handle:
        handle.write(_lock_text())
    return True


def lock_run_dir(run_dir: Path) -> None:
    """Lock ``run_dir`` for this process; a clear error while another live process holds it."""
    if not _try_lock(run_dir):
        holder = _holder(Path(run_dir) / LOCK_FILE) or {}
        raise MrsynthError(
            f"{run_dir}: in use by another training (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}); if that process is gone, delete {Path(run_dir) / LOCK_FILE}"
        )


def unlock_run_dir(run_dir: Path) -> None:
    """Release the lock if this process holds it."""
    lock = Path(run_dir) / LOCK_FILE
    if _holder(lock) == json.loads(_lock_text()):
        lock.unlink(missing_ok=True)


def write_run_start(run_dir: Path, cfg: Config, backend: str) -> None:
    """Record the resolved config and how/where the run was started."""
    save_config(cfg, run_dir / CONFIG_FILE)
    info = {
        "backend": backend,
        "status": "running",
        "command": " ".join(sys.argv),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "mrsynth": {"version": mrsynth.__version__, **source_revision()},
        "versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cfg.train.init_weights and Path(cfg.train.init_weights).is_file():  # which weights it started from
        info["init_weights_sha256"] = sha256_of(cfg.train.init_weights)
    write_json(run_dir / RUN_FILE, info)


def source_revision() -> dict[str, Any]:
    """The git commit of the mrsynth source that runs (``git_sha``, and ``git_dirty``: uncommitted
    changes to tracked files); both None when mrsynth is not run from a git checkout. The status
    takes no optional lock: a run killed while git refreshes the index would otherwise leave
    ``.git/index.lock`` behind and block the user's next commit."""
    root = Path(mrsynth.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"git_sha": None, "git_dirty": None}
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha, "git_dirty": bool(status.strip())}


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
    """What a weight file exported from a run carries besides tensors and model config, its
    model card included.

    ``details`` are the backend's facts about the checkpoint (step, file). A folder without
    run.json (an engine used outside the training loop) contributes only those.
    """
    run_dir = Path(run_dir)
    metadata: dict[str, Any] = {"checkpoint": which, **details}
    if not (run_dir / RUN_FILE).is_file():
        return metadata
    info = read_run_info(run_dir)
    facts = {
        "framework": info.get("backend"),
        "run": run_dir.name,
        "summary": info.get("summary", {}),
        "versions": info.get("versions", {}),
        "config": load_run_config(run_dir).to_dict(),
        "preprocessing": read_contract(run_dir).to_json(),
        **metadata,
    }
    return {**facts, CARD_KEY: model_card(facts, read_test_metrics(run_dir, which))}


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
