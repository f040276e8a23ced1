"""Scoring one subject's predictions, here or in worker processes beside the synthesis.

``evaluate`` spends most of its time in the float64 metrics of each subject (SSIM maps above
all), on one core, while the model waits. Worker processes score a subject while the evaluating
process synthesizes the next; a subject's rows are the same, bit for bit, wherever they are
computed, and the report keeps the subjects' order. Workers are spawned, not forked (the evaluating process holds
JAX's or PyTorch's threads), and ignore Ctrl-C, which the evaluating process handles.
"""
from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np

from mrsynth.evaluation.metrics import TargetCache, literature_slice_metrics, volume_metrics


def score_subject(subject: str, predictions: dict[str, np.ndarray], t2: np.ndarray, mask: np.ndarray,
                  data_range: float | None, labels: np.ndarray | None) -> list[dict[str, Any]]:
    """One row per method: every metric of its prediction against the real T2 (the T2's side of
    the metrics computed once for all methods). The volumes are scored as C-ordered copies: a
    loaded volume is a strided view of its file's order, which pickling to a worker makes
    C-ordered, and a whole-volume mean sums in memory order, so the last bit would otherwise
    depend on where the subject was scored."""
    t2, mask = np.ascontiguousarray(t2), np.ascontiguousarray(mask)
    labels = None if labels is None else np.ascontiguousarray(labels)
    predictions = {method: np.ascontiguousarray(pred) for method, pred in predictions.items()}
    target = TargetCache()
    return [{"subject": subject, "method": method,
             **volume_metrics(pred, t2, mask, data_range, labels, target),
             **literature_slice_metrics(pred, t2, mask, cache=target)} for method, pred in predictions.items()]


class SubjectScorer:
    """Scores subjects in submission order: in this process (``workers`` 0) or in ``workers``
    spawned processes, with at most ``workers`` subjects waiting beside the ones being scored
    (each holds a subject's volumes in memory)."""

    def __init__(self, pool: ProcessPoolExecutor | None, workers: int) -> None:
        self._pool = pool
        self._workers = workers
        self._scored: list[Future | list[dict[str, Any]]] = []

    def submit(self, *args: Any) -> None:
        """``score_subject``'s arguments."""
        if self._pool is None:
            self._scored.append(score_subject(*args))
            return
        pending = [f for f in self._scored if isinstance(f, Future) and not f.done()]
        if len(pending) >= 2 * self._workers:
            wait(pending, return_when=FIRST_COMPLETED)
        self._scored.append(self._pool.submit(score_subject, *args))

    def rows(self) -> list[dict[str, Any]]:
        """Every subject's rows, in submission order (a worker's error is raised here)."""
        return [row for scored in self._scored for row in (scored.result() if isinstance(scored, Future) else scored)]


@contextmanager
def subject_scorer(workers: int) -> Iterator[SubjectScorer]:
    """A ``SubjectScorer`` with ``workers`` processes (0: none), shut down on leaving: on an
    error or Ctrl-C, subjects not started are dropped and the ones being scored are waited for."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        yield SubjectScorer(None, 0)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    try:
        yield SubjectScorer(pool, workers)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
