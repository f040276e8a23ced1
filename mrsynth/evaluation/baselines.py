"""Non-learned T1 -> T2 baselines: the floor a trained network has to clear.

Each works on normalized volumes (the units the metrics compare): ``fit(pool)`` on the training
subjects' voxels (:func:`pool_training`, which reads one volume at a time), then
``predict(volume)``. Inside the mask they map T1 intensities; outside it they predict the
training T2 background mean (the identity baseline predicts T1 everywhere).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import stats as sps

from mrsynth.errors import DataError

if TYPE_CHECKING:
    from mrsynth.data.preprocess import Volume

N_QUANTILES = 1001
BASELINE_MAX_TRAIN = 40  # training subjects a run's baselines are fitted on (fit peak ~0.1 GB a 1 mm brain)


class Baseline(Protocol):
    name: str  # the key in tables and CSV files
    title: str  # what figures call it
    description: str

    def fit(self, pool: TrainingPool) -> Baseline: ...

    def predict(self, volume: Volume) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainingPool:
    """The training subjects' T1 and T2 inside their masks (float64, in the order the volumes
    came) and their T2's mean outside them: all a baseline fits on."""

    t1: np.ndarray
    t2: np.ndarray
    background: float


def pool_training(volumes: Iterable[Volume]) -> TrainingPool:
    """Pool the training volumes' voxels, one volume at a time: a generator that loads each
    subject keeps one volume in memory. The brain voxels are kept in the volumes' own dtype
    (float32 after preprocessing) until all are read, then cast: 16 bytes a brain voxel (T1 and
    T2) for the fit, about 25 MB a 1 mm brain."""
    t1s, t2s = [], []
    background_sum, background_count = 0.0, 0
    for vol in volumes:
        if vol.t2 is None:
            raise DataError(f"{vol.subject}: baselines need paired training volumes (no T2)")
        inside = vol.mask > 0
        t1s.append(vol.t1[inside])
        t2s.append(vol.t2[inside])
        outside = vol.t2[~inside].astype(np.float64)
        background_sum += float(outside.sum())
        background_count += outside.size
    if not t1s or sum(len(t) for t in t1s) < 2:
        raise DataError("baselines need at least one training volume with a non-empty mask")
    background = background_sum / background_count if background_count else 0.0
    return TrainingPool(np.concatenate(t1s).astype(np.float64), np.concatenate(t2s).astype(np.float64), background)


def _fill_background(volume: Volume, inside_values: np.ndarray, background: float) -> np.ndarray:
    out = np.full(volume.t1.shape, background, dtype=np.float32)
    out[volume.mask > 0] = inside_values
    return out


class IdentityBaseline:
    """Predict T2 = the normalized T1: what no learning at all scores."""

    name = "identity"
    title = "identity (T1)"
    description = "normalized T1 used as the T2 prediction"

    def fit(self, pool: TrainingPool) -> IdentityBaseline:
        return self

    def predict(self, volume: Volume) -> np.ndarray:
        return volume.t1.astype(np.float32, copy=True)


class LinearBaseline:
    """T2 ~ a * T1 + b, least squares over the training masks (a < 0: contrast inversion)."""

    name = "linear"
    title = "linear regression"
    description = "least-squares T2 = a*T1 + b inside the training masks"

    def __init__(self) -> None:
        self.slope = self.intercept = self.background = float("nan")

    def fit(self, pool: TrainingPool) -> LinearBaseline:
        self.background = pool.background
        self.slope, self.intercept = (float(v) for v in np.polyfit(pool.t1, pool.t2, 1))
        return self

    def predict(self, volume: Volume) -> np.ndarray:
        inside = volume.t1[volume.mask > 0].astype(np.float64)
        return _fill_background(volume, self.slope * inside + self.intercept, self.background)


class HistogramBaseline:
    """Rank-order mapping of the T1 inside the mask onto the pooled training T2 histogram.

    T1 and T2 contrasts are largely inverted in the brain, so the direction of the mapping
    follows the sign of the training T1/T2 correlation: with a negative one, the brightest T1
    voxel gets the darkest T2 value.
    """

    name = "histmatch"
    title = "histogram matching"
    description = "T1 ranks mapped onto the training T2 histogram (direction from the training correlation)"

    def __init__(self) -> None:
        self.quantiles = np.empty(0)
        self.inverted = False
        self.background = float("nan")

    def fit(self, pool: TrainingPool) -> HistogramBaseline:
        self.background = pool.background
        self.quantiles = np.quantile(pool.t2, np.linspace(0.0, 1.0, N_QUANTILES))
        self.inverted = bool(np.corrcoef(pool.t1, pool.t2)[0, 1] < 0)
        return self

    def predict(self, volume: Volume) -> np.ndarray:
        inside = volume.t1[volume.mask > 0].astype(np.float64)
        if inside.size == 0:
            return _fill_background(volume, inside, self.background)
        ranks = (sps.rankdata(inside, method="average") - 0.5) / inside.size  # in (0, 1)
        if self.inverted:
            ranks = 1.0 - ranks
        mapped = np.interp(ranks, np.linspace(0.0, 1.0, N_QUANTILES), self.quantiles)
        return _fill_background(volume, mapped, self.background)


BASELINES: dict[str, type] = {
    "identity": IdentityBaseline,
    "linear": LinearBaseline,
    "histmatch": HistogramBaseline,
}


def fit_baselines(train_volumes: Iterable[Volume], names: Sequence[str] = tuple(BASELINES)) -> dict[str, Baseline]:
    """Fit the named baselines (in the given order) on the training volumes, pooled once."""
    pool = pool_training(train_volumes)
    return {name: BASELINES[name]().fit(pool) for name in names}
