"""Run logging: metrics.jsonl (machine-readable), train.log (text), TensorBoard, a progress bar.

TensorBoard gets the scalars, the run's resolved config as text, its hyperparameters (hparams
tab, against the validation metrics) and, at each validation, one image per validation subject:
T1 | real T2 | synthesized T2 | |error| on a fixed slice. Only the process with index 0 writes;
the others get a logger whose methods do nothing, so the training loop stays free of rank checks.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from mrsynth.console import logging_to, progress_enabled
from mrsynth.config import flat_keys
from mrsynth.fileio import atomic_write_text, reporting_disk_full
from mrsynth.runs import CONFIG_FILE, read_run_info

METRICS_FILE = "metrics.jsonl"
TEXT_LOG_FILE = "train.log"
HPARAM_METRICS = ("val/mae", "val/psnr", "val/ssim", "val/nrmse", "val/pearson")
ERROR_WHITE = 0.25  # |error| images: white at this fraction of the T2 display window
log = logging.getLogger(__name__)


def summary_writer_class() -> type:
    """tensorboardX's ``SummaryWriter``, imported without torch in a process that has not loaded it.

    tensorboardX imports torch when it is installed, only to accept torch tensors; we log floats
    and numpy arrays. In a JAX process that import cost 2-3 s of start-up (measured: importing
    tensorboardX took 2.3 s with torch against 0.26 s without) and loaded a second framework.
    A ``None`` entry in ``sys.modules`` makes ``import torch`` raise ImportError, which
    tensorboardX handles; the entry is removed at once, so torch stays importable.
    """
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter


def truncate_metrics(path: Path, step: int) -> list[dict[str, Any]]:
    """Keep the rows up to ``step`` (a resumed run redoes the later ones); return the kept rows.

    A half-written last line (a kill mid-write) is dropped too. The rewrite is atomic.
    """
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            kept.append(row)
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    return kept


def preview_slices(t1: np.ndarray, t2: np.ndarray, synthesized: np.ndarray, mask: np.ndarray,
                   axis: int) -> dict[str, np.ndarray]:
    """The slice through the mask's centre along ``axis`` (the same slice at every validation),
    rotated for display (anterior or superior up): T1, real T2, synthesized T2 and the mask."""
    inside = np.argwhere(mask > 0)
    index = int(round(inside[:, axis].mean())) if inside.size else mask.shape[axis] // 2
    volumes = {"t1": t1, "t2": t2, "synthesized": synthesized, "mask": mask}
    return {name: np.rot90(np.take(volume, index, axis=axis)) for name, volume in volumes.items()}


def preview_strip(slices: dict[str, np.ndarray]) -> np.ndarray:
    """T1 | real T2 | synthesized | |error| side by side, grey values in [0, 1].

    T1 is windowed by its own 0.5-99.5th percentiles inside the mask, both T2s by the real T2's,
    and |error| is white at ``ERROR_WHITE`` of the T2 window, so images of one subject compare
    across validations. Intensities are shown inside the mask (normalized 0 would be mid-grey),
    errors everywhere."""
    inside = slices["mask"] > 0

    def window(image: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(image[inside] if inside.any() else image, [0.5, 99.5])
        return float(lo), float(max(hi, lo + 1e-6))

    t1_lo, t1_hi = window(slices["t1"])
    t2_lo, t2_hi = window(slices["t2"])
    error = np.abs(slices["synthesized"] - slices["t2"])
    shown = inside if inside.any() else np.ones_like(inside)  # intensities inside the mask, background black
    panels = [shown * (slices["t1"] - t1_lo) / (t1_hi - t1_lo), shown * (slices["t2"] - t2_lo) / (t2_hi - t2_lo),
              shown * (slices["synthesized"] - t2_lo) / (t2_hi - t2_lo), error / (ERROR_WHITE * (t2_hi - t2_lo))]
    return np.clip(np.concatenate(panels, axis=1), 0.0, 1.0).astype(np.float32)


def hparams_of(config: dict[str, Any], backend: str) -> dict[str, str | float | int | bool]:
    """Config keys as TensorBoard hyperparameters (lists as text; unset keys left out)."""
    flat = {"backend": backend, **flat_keys(config)}
    return {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in flat.items() if v is not None}


class _TextLogHandler(logging.FileHandler):
    """train.log: every message with its time, appended (a resumed run continues the file)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.setLevel(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))

    def handleError(self, record: logging.LogRecord) -> None:
        """A failed log line (a full disk) stays quiet: metrics.jsonl's writer reports it in one line."""


class RunLogger:
    """Appends one JSON line per event to metrics.jsonl, mirrors it to TensorBoard and train.log.

    ``resumed``: the run continues from a checkpoint at ``start_step``; rows and TensorBoard
    events after it are dropped, so redone steps are not logged twice (train.log keeps its
    lines: it is the history of what happened).
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool = True,
                 resumed: bool = False) -> None:
        self.enabled = enabled
        self.kept: list[dict[str, Any]] = []
        self._bar = None
        self._writer = None
        self._file = None
        self._text_log = contextlib.ExitStack()
        if not enabled:
            return
        run_dir = Path(run_dir)
        self._path = run_dir / METRICS_FILE
        if resumed:
            self.kept = truncate_metrics(self._path, start_step)
        with reporting_disk_full(run_dir / TEXT_LOG_FILE):
            self._text_log.enter_context(logging_to(_TextLogHandler(run_dir / TEXT_LOG_FILE)))
        self._file = open(self._path, "a", buffering=1)
        self._writer = summary_writer_class()(str(run_dir / "tb"), purge_step=start_step + 1 if resumed else None)
        if not resumed:
            self._describe_run(run_dir)
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                         dynamic_ncols=True, disable=not progress_enabled())

    def _describe_run(self, run_dir: Path) -> None:
        """Where the run is, and its resolved config as TensorBoard text and hparams."""
        from tensorboardX.summary import hparams

        log.info("run directory: %s", run_dir)
        config_text = (run_dir / CONFIG_FILE).read_text()
        log.debug("resolved config:\n%s", config_text)
        self._writer.add_text("config", "".join(f"    {line}\n" for line in config_text.splitlines()), 0)
        experiment, session_start, _ = hparams(
            hparams_of(yaml.safe_load(config_text), read_run_info(run_dir)["backend"]),
            {tag: 0.0 for tag in HPARAM_METRICS})
        self._writer.file_writer.add_summary(experiment)
        self._writer.file_writer.add_summary(session_start)

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """One event ('train' or 'val') at a step: to the JSONL file and TensorBoard."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with reporting_disk_full(self._path):
            self._file.write(json.dumps(record) + "\n")
        for name, value in values.items():
            self._writer.add_scalar(f"{kind}/{name}", value, step)
        if kind == "train":
            log.debug("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def log_images(self, step: int, previews: dict[str, dict[str, np.ndarray]]) -> None:
        """One grey image per validation subject (``preview_slices``' output) under val_images/."""
        if not self.enabled:
            return
        for subject, slices in previews.items():
            self._writer.add_image(f"val_images/{subject}", preview_strip(slices), step, dataformats="HW")

    def progress(self, step: int, postfix: dict[str, str]) -> None:
        """Advance the bar to ``step`` and show the latest values (host-side, no sync)."""
        if not self.enabled:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix(postfix, refresh=False)

    def message(self, text: str) -> None:
        if self.enabled:
            log.info(text)

    def last_values(self, kind: str) -> dict[str, float]:
        """The values of the last kept ``kind`` row from before a resume ({} when none)."""
        rows = [r for r in self.kept if r.get("kind") == kind]
        return {k: v for k, v in rows[-1].items() if k not in ("kind", "step", "time")} if rows else {}

    def close(self) -> None:
        if not self.enabled:
            return
        self._bar.close()
        self._writer.close()
        self._text_log.close()
        with reporting_disk_full(self._path):
            self._file.close()
