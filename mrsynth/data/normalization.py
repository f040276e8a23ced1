"""Intensity normalization of a subject's T1 and T2 inside the brain mask (``data.normalization``).

MR intensities have no unit: each scanner and protocol scales them differently. Every method
standardizes each volume from the voxels inside the mask; they differ in what is made to agree
across subjects and scanners:

- ``zscore``: in-mask mean 0, SD 1. ``percentile``: ``data.percentiles`` -> 0 and 1.
  ``wm_peak``: the brightest mode of the smoothed histogram -> 1 (offset 0).
- The standard MR methods, through the ``intensity-normalization`` package (numpy, so both
  backends share the result):
  - ``fcm``: fuzzy c-means (3 classes) on the T1; the brightest class's membership is white
    matter, and each contrast is divided by its membership-weighted mean (WM -> 1). The T2 uses
    the T1's white matter, as the package documents for other contrasts.
  - ``whitestripe``: ``(x - mean) / SD`` of the white stripe, the voxels within +-5% quantiles of
    the white-matter mode (T1: the highest mode, T2: the largest): normal-appearing WM -> N(0, 1).
  - ``kde``: ``x / mode`` of the white-matter mode of a kernel density estimate (T1: highest, T2:
    largest).
  - ``nyul``: piecewise-linear histogram matching: the volume's intensities at
    ``data.percentiles``' ends and the deciles map onto a standard scale learned on the training
    subjects (ends -> 0 and 1; T1 and T2 each have their own).

All but ``nyul`` are affine and recorded exactly by :class:`NormStats`; ``nyul`` is monotone
piecewise-linear, and its NormStats is the affine map of its end landmarks (``percentile``'s).
Fits that cannot standardize (a white-matter mode on the wrong side of the brain's median, a
white stripe far narrower than the brain's spread, tied landmarks) raise a one-line DataError
instead of producing values a network would train on as if they were meaningful.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mrsynth.config import NYUL_DECILES, DataConfig
from mrsynth.errors import DataError

# A +-5% quantile stripe around a white-matter peak has an SD of about 5% of the brain's robust SD
# on real scans (0.046-0.064 on the two SRI24 patients); on the noise-free phantom's spike of a
# WM peak it is 0.7-2%, and the brain then spans hundreds of stripe SDs.
MIN_STRIPE_SPREAD = 0.03
FCM_SEED = 0
KDE_T1_TAIL = 96.0  # KDENormalizer drops a T1's intensities above this percentile before its estimate


@dataclass(frozen=True)
class NormStats:
    """Per-volume intensity normalization: ``normalized = (x - offset) / scale``."""

    offset: float
    scale: float

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def denormalize(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float64) * self.scale + self.offset).astype(np.float32)

    def to_json(self) -> dict[str, float]:
        return {"offset": self.offset, "scale": self.scale}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> NormStats:
        return cls(offset=float(raw["offset"]), scale=float(raw["scale"]))


@dataclass(frozen=True)
class Normalized:
    """One contrast after normalization: the whole grid and its affine frame."""

    values: np.ndarray
    stats: NormStats


def normalize_subject(t1: np.ndarray, t2: np.ndarray | None, mask: np.ndarray, cfg: DataConfig,
                      t1_path: Path | str, t2_path: Path | str | None) -> tuple[Normalized, Normalized | None]:
    """T1 and T2 (None for a T1-only input) normalized with statistics from inside ``mask``."""
    inside = np.asarray(mask, dtype=bool)
    white_matter = fcm_white_matter(t1[inside], t1_path) if cfg.normalization == "fcm" else None

    def normalized(x: np.ndarray, contrast: str, path: Path | str) -> Normalized:
        if cfg.normalization == "nyul":
            return nyul_normalize(x, inside, nyul_scale(cfg, contrast), cfg.percentiles, path)
        if white_matter is not None:
            stats = _checked(0.0, float(np.average(x[inside], weights=white_matter)), path)
        else:
            stats = fit_normalization(x, inside, cfg, path, contrast)
        return Normalized(stats.normalize(x), stats)

    return normalized(t1, "t1", t1_path), (normalized(t2, "t2", t2_path) if t2 is not None else None)


def fit_normalization(x: np.ndarray, mask: np.ndarray, cfg: DataConfig, path: Path | str,
                      contrast: str = "t1") -> NormStats:
    """Affine statistics of ``x`` inside ``mask`` for the per-volume methods (not fcm, nyul)."""
    values = np.asarray(x, dtype=np.float64)[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        raise DataError(f"{path}: no voxels inside the foreground mask")
    method = cfg.normalization
    if method == "zscore":
        offset, scale = float(values.mean()), float(values.std())
    elif method == "percentile":
        low, high = np.percentile(values, cfg.percentiles)
        offset, scale = float(low), float(high - low)
    elif method == "wm_peak":
        offset, scale = 0.0, white_matter_peak(values)
    elif method == "whitestripe":
        offset, scale = white_stripe(values, contrast, path)
    elif method == "kde":
        offset, scale = 0.0, kde_white_matter_mode(values, contrast, path)
    else:
        raise DataError(f"data.normalization: {method!r} is not a per-volume method")
    return _checked(offset, scale, path)


def _checked(offset: float, scale: float, path: Path | str) -> NormStats:
    if not np.isfinite(scale) or scale <= 1e-12 * max(1.0, abs(offset)):
        raise DataError(f"{path}: constant intensities inside the mask (zero variance), cannot normalize")
    return NormStats(offset=offset, scale=scale)


def white_matter_peak(values: np.ndarray, bins: int = 256, sigma_bins: float = 2.0, min_height: float = 0.1) -> float:
    """Intensity of the highest-intensity mode of the smoothed histogram.

    Modes lower than ``min_height`` x the tallest one are noise; among the rest, the brightest
    is white matter on a T1w volume (the convention FCM-normalized data follows: WM -> 1).
    """
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        return float(high)
    hist, edges = np.histogram(values, bins=bins, range=(low, high))
    smooth = ndimage.gaussian_filter1d(hist.astype(np.float64), sigma_bins, mode="constant")
    inner = smooth[1:-1]
    peaks = np.flatnonzero((inner >= smooth[:-2]) & (inner > smooth[2:])) + 1
    peaks = [p for p in peaks if smooth[p] >= min_height * smooth.max()]
    best = max(peaks) if peaks else int(np.argmax(smooth))
    return float((edges[best] + edges[best + 1]) / 2)


# ---------------------------------------------------------------- intensity-normalization methods
# The package is imported where a method uses it: its import takes over a second (scipy.signal).


def _image(values: np.ndarray) -> Any:
    from intensity_normalization import create_image

    return create_image(np.asarray(values, dtype=np.float32))


def _whole(values: np.ndarray) -> Any:
    """An all-ones mask: the package would otherwise keep only positive voxels as foreground."""
    return _image(np.ones(np.shape(values), dtype=np.float32))


def _refuse(path: Path | str, method: str, problem: str) -> DataError:
    return DataError(f"{path}: data.normalization={method}: {problem}; use zscore")


def fcm_white_matter(t1_brain: np.ndarray, path: Path | str) -> np.ndarray:
    """White-matter membership (0..1) of each in-mask T1 voxel from fuzzy c-means, 3 classes.

    skfuzzy draws the initial memberships from numpy's global generator; it is seeded for the
    call (and the caller's state restored) so preprocessing stays a function of its inputs.
    """
    from intensity_normalization import FCMNormalizer, TissueType
    from intensity_normalization.domain.exceptions import NormalizationError

    state = np.random.get_state()
    np.random.seed(FCM_SEED)
    try:
        fcm = FCMNormalizer(tissue_type=TissueType.WM).fit(_image(t1_brain), _whole(t1_brain))
    except NormalizationError as exc:
        raise _refuse(path, "fcm", str(exc)) from None
    finally:
        np.random.set_state(state)
    return np.asarray(fcm.tissue_membership, dtype=np.float64)


def white_stripe(values: np.ndarray, contrast: str, path: Path | str) -> tuple[float, float]:
    """Mean and SD of the white stripe of in-mask ``values``, refused where it is not white matter
    or is too narrow for the brain's spread."""
    from intensity_normalization import Modality, WhiteStripeNormalizer
    from intensity_normalization.domain.exceptions import NormalizationError

    try:
        stripe = WhiteStripeNormalizer(modality=Modality(contrast)).fit(_image(values), _whole(values))
    except NormalizationError as exc:
        raise _refuse(path, "whitestripe", str(exc)) from None
    mean, sd = float(stripe.mean), float(stripe.std)
    _check_white_matter_side(mean, values, contrast, "whitestripe", path)
    q25, q75 = np.percentile(values, [25, 75])
    spread = float(q75 - q25) / 1.349  # the SD of a normal distribution with this IQR
    if sd < MIN_STRIPE_SPREAD * spread:
        raise _refuse(path, "whitestripe", f"the white stripe's SD {sd:.3g} is {sd / spread:.3f} of the "
                      f"brain's spread {spread:.3g} (below {MIN_STRIPE_SPREAD}), so normalized values "
                      f"would reach +-{float(np.max(np.abs(values - mean))) / sd:.0f}")
    return mean, sd


def kde_white_matter_mode(values: np.ndarray, contrast: str, path: Path | str) -> float:
    """The white-matter mode of in-mask ``values`` (T1: highest-intensity mode, T2: largest).

    intensity-normalization 3.0.1 hands its bandwidth (max / 80 in intensity units, 2.x's rule) to
    scipy's gaussian_kde as a factor of the data's SD, which smooths raw intensities into one
    bump. Fitting ``values / SD`` makes the two equal (and stays right once the package passes
    an absolute bandwidth); the mode is scaled back.
    """
    from intensity_normalization import KDENormalizer, Modality

    estimated = values[values <= np.percentile(values, KDE_T1_TAIL)] if contrast == "t1" else values
    unit = float(np.std(estimated))
    if unit <= 0:
        raise DataError(f"{path}: constant intensities inside the mask (zero variance), cannot normalize")
    kde = KDENormalizer(modality=Modality(contrast)).fit(_image(values / unit), _whole(values))
    mode = float(kde.tissue_mode) * unit
    if mode <= 0:
        raise _refuse(path, "kde", f"the tissue mode {mode:.4g} is not a positive intensity")
    _check_white_matter_side(mode, values, contrast, "kde", path)
    return mode


def _check_white_matter_side(value: float, values: np.ndarray, contrast: str, method: str,
                             path: Path | str) -> None:
    """White matter is brighter than most of the brain on a T1 and darker on a T2."""
    median = float(np.median(values))
    if (contrast == "t1" and value <= median) or (contrast == "t2" and value >= median):
        side = "not above" if contrast == "t1" else "not below"
        raise _refuse(path, method, f"the white-matter mode found ({value:.4g}) is {side} the brain's "
                      f"median ({median:.4g}) on a {contrast.upper()}, so it is another tissue's mode")


def nyul_percentiles(percentiles: tuple[float, float]) -> np.ndarray:
    """The landmark percentiles: ``data.percentiles``' two ends and the deciles between."""
    return np.asarray([percentiles[0], *NYUL_DECILES, percentiles[1]], dtype=np.float64)


def _nyul_normalizer(percentiles: tuple[float, float]) -> Any:
    from intensity_normalization import NyulNormalizer

    step = NYUL_DECILES[1] - NYUL_DECILES[0]
    return NyulNormalizer(output_min_value=0.0, output_max_value=1.0, min_percentile=percentiles[0],
                          max_percentile=percentiles[1], percentile_after_min=NYUL_DECILES[0],
                          percentile_before_max=NYUL_DECILES[-1], percentile_step=step)


def _nyul_landmarks(values: np.ndarray, percentiles: tuple[float, float], path: Path | str) -> np.ndarray:
    """A volume's landmark intensities, refused when two coincide (the map would divide by zero)."""
    where = nyul_percentiles(percentiles)
    landmarks = np.percentile(values, where)
    tied = np.flatnonzero(np.diff(landmarks) <= 0)
    if tied.size:
        i = int(tied[0])
        raise _refuse(path, "nyul", f"the intensities at percentiles {where[i]:g} and {where[i + 1]:g} are "
                      f"both {landmarks[i]:.4g} (too many equal voxels to match histograms)")
    return landmarks


def nyul_volume_scale(values: np.ndarray, percentiles: tuple[float, float], path: Path | str) -> np.ndarray:
    """One training volume's landmarks mapped linearly onto [0, 1] (its ends onto 0 and 1).

    The package's population fit is the mean of these over the volumes; fitting one volume at a
    time and averaging (:func:`mrsynth.data.preprocess.fit_training_normalization`) keeps one
    volume in memory.
    """
    _nyul_landmarks(values, percentiles, path)
    nyul = _nyul_normalizer(percentiles).fit_population([_image(values)], [_whole(values)])
    return np.asarray(nyul.standard_scale, dtype=np.float64)


def nyul_scale(cfg: DataConfig, contrast: str) -> tuple[float, ...]:
    scale = cfg.nyul_t1_landmarks if contrast == "t1" else cfg.nyul_t2_landmarks
    if not scale:
        raise DataError("data.normalization=nyul: no standard scale (a run learns it on its training subjects "
                        "when it starts and keeps it in preprocessing.json)")
    return scale


def nyul_normalize(x: np.ndarray, inside: np.ndarray, scale: tuple[float, ...], percentiles: tuple[float, float],
                   path: Path | str) -> Normalized:
    """``x`` matched onto the standard ``scale`` through its own in-mask landmarks."""
    landmarks = _nyul_landmarks(np.asarray(x, dtype=np.float64)[inside], percentiles, path)
    nyul = _nyul_normalizer(percentiles)
    stored = io.BytesIO()
    np.save(stored, np.vstack([np.asarray(scale, dtype=np.float64), nyul_percentiles(percentiles)]))
    stored.seek(0)
    nyul.load_standard_histogram(stored)
    values = nyul.transform(_image(x), _image(inside)).get_data().astype(np.float32)
    stats = NormStats(offset=float(landmarks[0]), scale=float(landmarks[-1] - landmarks[0]))
    return Normalized(values, stats)
