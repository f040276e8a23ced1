"""Scoring subjects in worker processes: the rows this process would compute, in order."""
from __future__ import annotations

import numpy as np
import pytest

from mrsynth.evaluation.scoring import score_subject, subject_scorer


def _subject(seed: int) -> tuple:
    """A subject as ``load_volume`` gives it: strided views of the file's order (RAS+ reorientation)."""
    rng = np.random.default_rng(seed)
    stored = rng.normal(size=(36, 40, 30)).astype(np.float32)
    inside = np.zeros(stored.shape, bool)
    inside[6:30, 8:32, 5:25] = True
    stored[~inside] = 0
    t2, mask = (np.transpose(a, (2, 1, 0))[::-1] for a in (stored, inside))
    predictions = {"run": np.where(mask, t2 + rng.normal(0, 0.3, t2.shape), 0).astype(np.float32),
                   "identity": np.transpose(stored * 0.7 + 1.0, (2, 1, 0))[::-1],  # non-zero outside the mask
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
    assert rows == here.rows()  # bit for bit, subject by subject, in order
    assert [(r["subject"], r["method"]) for r in rows] == [(f"s{i}", m) for i in range(5) for m in ("run", "identity", "linear")]
    assert rows[:3] == score_subject(*subjects[0])


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
