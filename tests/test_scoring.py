"""Scoring subjects in worker processes: the rows this process would compute, in order."""
from __future__ import annotations

import numpy as np
import pytest
from rounding import same_to_rounding

from mrsynth.evaluation.scoring import score_subject, subject_scorer


def _subject(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    t2 = rng.normal(size=(14, 16, 12)).astype(np.float32)
    mask = np.zeros(t2.shape, bool)
    mask[3:11, 4:12, 2:10] = True
    t2[~mask] = 0
    predictions = {"run": np.where(mask, t2 + rng.normal(0, 0.3, t2.shape), 0).astype(np.float32),
                   "linear": np.where(mask, 0.5 * t2 + 0.1, 0).astype(np.float32)}
    return f"s{seed}", predictions, t2, mask, None, mask.astype(np.int16)


def test_workers_score_every_subject_as_this_process_does_in_order():
    subjects = [_subject(seed) for seed in range(5)]
    with subject_scorer(0) as here:
        for subject in subjects:
            here.submit(*subject)
    with subject_scorer(2) as workers:
        for subject in subjects:
            workers.submit(*subject)
        rows = workers.rows()
    assert same_to_rounding(rows, here.rows())  # subject by subject, in order
    assert [(r["subject"], r["method"]) for r in rows] == [(f"s{i}", m) for i in range(5) for m in ("run", "linear")]
    assert rows[:2] == score_subject(*subjects[0])  # in this process: the same function, bit for bit


def test_a_workers_error_reaches_the_caller():
    name, predictions, t2, mask, data_range, labels = _subject(0)
    predictions["run"] = predictions["run"][:-1]
    with pytest.raises(ValueError, match="shape mismatch"):
        with subject_scorer(1) as workers:
            workers.submit(name, predictions, t2, mask, data_range, labels)
            workers.rows()
    with pytest.raises(ValueError, match="workers must be >= 0"):
        with subject_scorer(-1):
            pass
