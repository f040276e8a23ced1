"""Run logging: metrics.jsonl (machine-readable), TensorBoard events, and a progress bar.

Only the process with index 0 writes; the others get a logger whose methods do nothing, so
the training loop stays free of rank checks.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mrsynth.fileio import atomic_write_text, reporting_disk_full

METRICS_FILE = "metrics.jsonl"


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


class RunLogger:
    """Appends one JSON line per event to metrics.jsonl and mirrors scalars to TensorBoard.

    ``resumed``: the run continues from a checkpoint at ``start_step``; rows and TensorBoard
    events after it are dropped, so redone steps are not logged twice.
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool = True,
                 resumed: bool = False) -> None:
        self.enabled = enabled
        self.kept: list[dict[str, Any]] = []
        self._bar = None
        self._writer = None
        self._file = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self._path = Path(run_dir) / METRICS_FILE
        if resumed:
            self.kept = truncate_metrics(self._path, start_step)
        self._file = open(self._path, "a", buffering=1)
        self._writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step + 1 if resumed else None)
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                         dynamic_ncols=True)

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """One event ('train' or 'val') at a step: to the JSONL file and TensorBoard."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with reporting_disk_full(self._path):
            self._file.write(json.dumps(record) + "\n")
        for name, value in values.items():
            self._writer.add_scalar(f"{kind}/{name}", value, step)

    def progress(self, step: int, postfix: dict[str, str]) -> None:
        """Advance the bar to ``step`` and show the latest values (host-side, no sync)."""
        if not self.enabled:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix(postfix, refresh=False)

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def last_values(self, kind: str) -> dict[str, float]:
        """The values of the last kept ``kind`` row from before a resume ({} when none)."""
        rows = [r for r in self.kept if r.get("kind") == kind]
        return {k: v for k, v in rows[-1].items() if k not in ("kind", "step", "time")} if rows else {}

    def close(self) -> None:
        if not self.enabled:
            return
        self._bar.close()
        self._writer.close()
        with reporting_disk_full(self._path):
            self._file.close()
