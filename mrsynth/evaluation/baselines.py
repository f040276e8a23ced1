"""Non-learned T1 -> T2 baselines: the floor a trained network has to clear.

Each works on normalized volumes (the units the metrics compare): ``fit(train_volumes)`` on the
training subjects, then ``predict(volume)``. Inside the mask they map T1 intensities; outside it
they predict the training T2 background mean (the identity baseline predicts T1 everywhere).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import stats as sps

from mrsynth.errors import DataError

if TYPE_CHECKING:
    from mrsynth.data.preprocess import Volume

N_QUANTILES = 1001


class Baseline(Protocol):
    name: str  # the key in tables and CSV files
    title: str  # what figures call it
    description: str

    def fit(self, train_volumes: Sequence[Volume]) -> Baseline: ...

    def predict(self, volume: Volume) -> np.ndarray: ...


def _pooled(volumes: Sequence[Volume]) -> tuple[np.ndarray, np.ndarray, float]:
    """T1 and T2 inside the masks of all training volumes, and the mean T2 outside them."""
    t1s, t2s, background = [], [], []
    for vol in volumes:
        if vol.t2 is None:
            raise DataError(f"{vol.subject}: baselines need paired training volumes (no T2)")
        inside = vol.mask > 0
        t1s.append(vol.t1[inside].astype(np.float64))
        t2s.append(vol.t2[inside].astype(np.float64))
        if (~inside).any():
            background.append(vol.t2[~inside].astype(np.float64))
    if not t1s or sum(len(t) for t in t1s) < 2:
        raise DataError("baselines need at least one training volume with a non-empty mask")
    bg = float(np.concatenate(background).mean()) if background else 0.0
    return np.concatenate(t1s), np.concatenate(t2s), bg


def _fill_background(volume: Volume, inside_values: np.ndarray, background: float) -> np.ndarray:
    out = np.full(volume.t1.shape, background, dtype=np.float32)
    out[volume.mask > 0] = inside_values
    return out


class IdentityBaseline:
    """Predict T2 = the normalized T1: what no learning at all scores."""

    name = "identity"
    title = "identity (T1)"
    description = "normalized T1 used as the T2 prediction"

    def fit(self, train_volumes: Sequence[Volume]) -> IdentityBaseline:
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

    def fit(self, train_volumes: Sequence[Volume]) -> LinearBaseline:
        t1, t2, self.background = _pooled(train_volumes)
        self.slope, self.intercept = (float(v) for v in np.polyfit(t1, t2, 1))
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

    def fit(self, train_volumes: Sequence[Volume]) -> HistogramBaseline:
        t1, t2, self.background = _pooled(train_volumes)
        self.quantiles = np.quantile(t2, np.linspace(0.0, 1.0, N_QUANTILES))
        self.inverted = bool(np.corrcoef(t1, t2)[0, 1] < 0)
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


def fit_baselines(train_volumes: Sequence[Volume], names: Sequence[str] = tuple(BASELINES)) -> dict[str, Baseline]:
    """Fit the named baselines on the training volumes (in the given order)."""
    return {name: BASELINES[name]().fit(train_volumes) for name in names}
