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


class RunLogger:
    """Appends one JSON line per event to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = None
        self._writer = None
        self._file = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self._file = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
        self._writer = SummaryWriter(str(Path(run_dir) / "tb"))
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                         dynamic_ncols=True)

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """One event ('train' or 'val') at a step: to the JSONL file and TensorBoard."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
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

    def close(self) -> None:
        if not self.enabled:
            return
        self._bar.close()
        self._writer.close()
        self._file.close()
