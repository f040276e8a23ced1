"""Image-similarity metrics for synthesized volumes: one numpy/scipy implementation for all runs.

Conventions (stated in every report):
- Primary metrics are computed inside the brain/foreground mask; ``*_full`` over the whole volume.
- PSNR and NRMSE use one data range R: ``eval.data_range`` when set, otherwise the target's
  max - min inside the mask (per subject). NRMSE = RMSE / R.
- SSIM follows Wang et al. 2004 (as scikit-image with gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False): a Gaussian window (sigma 1.5, 11 wide), C1=(0.01 R)^2,
  C2=(0.03 R)^2. ``ssim`` is the 3D SSIM map averaged inside the mask; ``ssim_full`` is the map
  averaged over the volume without the 5-voxel border (equal to skimage's value);
  ``ssim2d`` is the mean over axial slices holding foreground of the 2D SSIM map averaged
  inside the slice's mask.
- Scale-invariant metrics (``*_z``) first z-score the prediction and the target each inside the
  mask, as independent scorers do: a prediction that is right up to gain and offset loses
  nothing, and one that shrinks towards the mean (low contrast) cannot hide in small errors.
- ``sharpness`` is the mean gradient magnitude of the z-scored prediction inside the eroded
  mask over that of the real T2: 1 is as sharp as the real image, below 1 smoother (L1-trained
  networks blur), above 1 noisier. It is not a similarity: closer to 1 is better.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from scipy import ndimage

from mrsynth.data.sampling import bounding_box

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5 -> an 11-wide window, as scikit-image
SSIM_K1 = 0.01
SSIM_K2 = 0.03
AXIAL_AXIS = 2  # RAS+: the third axis runs inferior -> superior

METRIC_DESCRIPTIONS: dict[str, str] = {
    "psnr": "PSNR in dB inside the mask, data range R (higher is better)",
    "ssim": "3D SSIM averaged inside the mask (higher is better)",
    "ssim2d": "2D SSIM, mean over axial slices inside the mask (higher is better)",
    "mae": "mean absolute error inside the mask, normalized units (lower is better)",
    "nrmse": "RMSE inside the mask divided by R (lower is better)",
    "pearson": "Pearson correlation inside the mask (higher is better)",
    "psnr_full": "PSNR in dB over the whole volume, same R",
    "ssim_full": "3D SSIM over the whole volume (5-voxel border excluded)",
    "mae_full": "mean absolute error over the whole volume",
    "psnr_z": "PSNR in dB inside the mask after z-scoring each volume inside the mask, R = the "
              "z-scored target's range (scale-invariant; higher is better)",
    "ssim_z": "3D SSIM inside the mask of the z-scored volumes, same R (scale-invariant; higher is better)",
    "mae_z": "mean absolute error inside the mask of the z-scored volumes, in SDs (lower is better)",
    "sharpness": "mean gradient magnitude inside the eroded mask, prediction over real T2, z-scored "
                 "(1 = as sharp; below 1 smoother)",
}
def metric_bounds(name: str) -> tuple[float, float]:
    """The values a metric can take (confidence intervals are clipped to them): SSIM and Pearson
    r in [-1, 1], errors, ratios and counts from 0; PSNR unbounded."""
    if name.startswith("ssim") or name == "pearson":
        return (-1.0, 1.0)
    if name.startswith("mae") or name in ("nrmse", "sharpness", "data_range", "n_slices_lit"):
        return (0.0, math.inf)
    return (-math.inf, math.inf)


HIGHER_IS_BETTER = {"psnr", "ssim", "ssim2d", "pearson", "psnr_full", "ssim_full", "psnr_lit", "ssim_lit",
                    "psnr_z", "ssim_z"}


def resolve_data_range(target: np.ndarray, mask: np.ndarray, data_range: float | None) -> float:
    """The fixed ``data_range`` when given, else the target's range inside the mask."""
    if data_range is not None:
        if not data_range > 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        return float(data_range)
    inside = target[mask]
    if inside.size == 0:
        raise ValueError("the mask is empty")
    value = float(inside.max() - inside.min())
    return value if value > 0 else 1.0


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """PSNR in dB over the given voxels; +inf when they are identical."""
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


class TargetCache:
    """What the metrics derive from one target and mask alone (its z-scored copy, the local means
    and variances of its regions under the SSIM window, ...), computed on first use and kept:
    scoring several predictions of one subject computes it once, with the values each would get
    alone. One cache serves one (target, mask) pair: ``bind`` refuses another."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._bound: tuple[np.ndarray, np.ndarray] | None = None

    def bind(self, target: np.ndarray, mask: np.ndarray) -> None:
        if self._bound is None:
            self._bound = (target, mask)
        elif self._bound[0] is not target or self._bound[1] is not mask:
            raise ValueError("a TargetCache holds one target and mask; make one per subject")

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]


def _window_blur(a: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")


def window_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local mean, its square, local variance) of ``a`` (float64) under the SSIM window."""
    a = np.asarray(a, dtype=np.float64)
    mean = _window_blur(a)
    mean_sq = mean * mean
    return mean, mean_sq, _window_blur(a * a) - mean_sq


def ssim_map(pred: np.ndarray, target: np.ndarray, data_range: float,
             target_moments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Local SSIM map (2D or 3D) with a Gaussian window, computed in float64; ``target_moments``
    (``window_moments(target)``, when already known) saves the target's two filters."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    ux, ux_sq, vx = window_moments(x)
    uy, uy_sq, vy = target_moments if target_moments is not None else window_moments(y)
    vxy = _window_blur(x * y) - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux_sq + uy_sq + c1) * (vx + vy + c2)
    return num / den


def box_key(box: tuple[slice, ...]) -> tuple[tuple[int, int], ...]:
    """A box as a hashable key (slices are not hashable before Python 3.12)."""
    return tuple((s.start, s.stop) for s in box)


SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)


def masked_ssim_mean(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float,
                     cache: TargetCache | None = None, key: Hashable = ()) -> float:
    """Mean of ``ssim_map`` inside ``mask``, computed on the mask's bounding box widened by the
    window radius: every in-mask value reads the same voxels as on the whole array (the
    separable filter's passes included), so the mean is the same, for a fraction of the work.
    ``cache`` keeps the target's window moments under ``key`` (which names the region)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return math.nan
    box = bounding_box(mask, SSIM_RADIUS)
    moments = (cache or TargetCache()).get(("ssim", key, box_key(box)), lambda: window_moments(target[box]))
    return float(ssim_map(pred[box], target[box], data_range, moments)[mask[box]].mean())


def slices_along(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` with ``axis`` first, contiguous: one copy instead of a strided gather per slice."""
    return np.ascontiguousarray(np.moveaxis(a, axis, 0))


def mean_without_border(smap: np.ndarray) -> float:
    """Mean of an SSIM map without the window radius at each border (as scikit-image)."""
    r = SSIM_RADIUS
    interior = smap[tuple(slice(r, n - r) for n in smap.shape)]
    return float(interior.mean()) if interior.size else float(smap.mean())


def nonempty_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as booleans (a 0/1 array indexes as a mask, not as positions); an empty one is an error."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the mask is empty")
    return mask


def volume_ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float,
                cache: TargetCache | None = None) -> tuple[float, float]:
    """(``ssim``, ``ssim_full``) of a volume from one SSIM map on the box where either volume is
    non-zero, widened by the window radius. Outside that box every window sees zeros in both
    volumes, where SSIM is exactly (C1 C2) / (C1 C2) = 1, and inside it the map equals the
    whole volume's (as in ``masked_ssim_mean``); a skull-stripped brain fills a fraction of its
    volume, so this is the whole volume's figure (to rounding) for that fraction of the work."""
    mask = nonempty_mask(mask)
    box = bounding_box(mask | (pred != 0) | (target != 0), SSIM_RADIUS)
    moments = (cache or TargetCache()).get(("volume", box_key(box)), lambda: window_moments(target[box]))
    smap = ssim_map(pred[box], target[box], data_range, moments)
    interior = np.zeros(pred.shape, bool)  # as mean_without_border: the window radius off each border
    interior[tuple(slice(SSIM_RADIUS, n - SSIM_RADIUS) for n in pred.shape)] = True
    if not interior.any():  # thinner than the window: scikit-image's whole mean
        interior[...] = True
    inside = smap[interior[box]]
    total = int(np.count_nonzero(interior))
    return float(smap[mask[box]].mean()), float((inside.sum() + (total - inside.size)) / total)


def ssim2d_mean(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float,
                axis: int = AXIAL_AXIS, cache: TargetCache | None = None) -> float:
    """Mean over slices (along ``axis``) holding foreground of the 2D SSIM inside the mask."""
    cache = cache or TargetCache()
    targets = cache.get(("slices", axis), lambda: slices_along(target, axis))
    masks = cache.get(("mask slices", axis), lambda: slices_along(mask, axis))
    values = [masked_ssim_mean(p, t, m, data_range, cache, ("2d", axis, i))
              for i, (p, t, m) in enumerate(zip(slices_along(pred, axis), targets, masks)) if m.any()]
    return float(np.mean(values)) if values else math.nan


def pearson(pred: np.ndarray, target: np.ndarray) -> float:
    x = pred.astype(np.float64).ravel()
    y = target.astype(np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y)) / denom if denom > 0 else math.nan


def zscore_inside(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x`` z-scored by its mean and SD inside ``mask`` (float64), 0 outside the mask."""
    inside = x[mask].astype(np.float64)
    sd = float(inside.std())
    z = (x.astype(np.float64) - float(inside.mean())) / (sd if sd > 0 else 1.0)
    return np.where(mask, z, 0.0)


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """Voxel-wise |grad x| by central differences along every axis (float64)."""
    return np.sqrt(sum(g * g for g in np.gradient(x.astype(np.float64))))


def _sharpness_reference(target_z: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The mask eroded by one voxel (the mask's own edge against the zero background is not
    image detail), and the target's mean |grad| inside it."""
    inner = ndimage.binary_erosion(mask)
    if not inner.any():
        inner = mask
    return inner, float(gradient_magnitude(target_z)[inner].mean())


def sharpness_ratio(pred_z: np.ndarray, target_z: np.ndarray, mask: np.ndarray,
                    cache: TargetCache | None = None) -> float:
    """Mean |grad| of the prediction over that of the target inside the mask eroded by one voxel."""
    inner, reference = (cache or TargetCache()).get("sharpness", lambda: _sharpness_reference(target_z, mask))
    return float(gradient_magnitude(pred_z)[inner].mean()) / reference if reference > 0 else math.nan


def _z_target(target: np.ndarray, mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, float]:
    """The mask's box widened by the SSIM radius, the mask and the z-scored target on it, and R."""
    mask = nonempty_mask(mask)
    box = bounding_box(mask, SSIM_RADIUS)
    zt = zscore_inside(target[box], mask[box])
    return box, mask[box], zt, resolve_data_range(zt, mask[box], None)


def scale_invariant_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                            cache: TargetCache | None = None) -> dict[str, float]:
    """psnr_z, ssim_z, mae_z and sharpness (see the module docstring) of one volume.

    Each reads the mask and its neighbours within the SSIM window only, so all four are computed
    on the mask's box widened by that radius: the same values for a fraction of the work."""
    cache = cache or TargetCache()
    box, mask, zt, r = cache.get("z", lambda: _z_target(target, mask))
    zp = zscore_inside(pred[box], mask)
    zt_inside = cache.get("z inside", lambda: zt[mask])
    zp_inside = zp[mask]
    return {
        "psnr_z": psnr(zp_inside, zt_inside, r),
        "ssim_z": masked_ssim_mean(zp, zt, mask, r, cache, "z"),
        "mae_z": float(np.mean(np.abs(zp_inside - zt_inside))),
        "sharpness": sharpness_ratio(zp, zt, mask, cache),
    }


MIN_SLICE_VOXELS = 100  # fewer mask voxels in a slice: its PSNR says little, left out


def slice_psnr_z(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, axis: int = AXIAL_AXIS) -> list[float]:
    """psnr_z per slice along ``axis``: both volumes z-scored inside the whole mask, each slice's
    masked squared error against the z-scored target's volume range (so the slices of one
    volume share one R and average like the volume's ``psnr_z``); slices with fewer than
    ``MIN_SLICE_VOXELS`` mask voxels are left out. The unit of a paired test over slices."""
    mask = np.asarray(mask) > 0
    zp, zt = zscore_inside(pred, mask), zscore_inside(target, mask)
    r = resolve_data_range(zt, mask, None)
    return [psnr(p[inside], t[inside], r)
            for p, t, inside in zip(slices_along(zp, axis), slices_along(zt, axis), slices_along(mask, axis))
            if inside.sum() >= MIN_SLICE_VOXELS]


def tissue_names() -> dict[int, str]:
    from mrsynth.phantom.dataset import TISSUES

    return dict(TISSUES)


def volume_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    data_range: float | None = None,
    labels: np.ndarray | None = None,
    cache: TargetCache | None = None,
) -> dict[str, float]:
    """All per-subject metrics of a synthesized volume against its real T2 (same grid).

    Keys: psnr, ssim, ssim2d, mae, nrmse, pearson (inside ``mask``), psnr_full, ssim_full,
    mae_full (whole volume), data_range (the R used), the scale-invariant psnr_z, ssim_z, mae_z
    and sharpness, and ``mae_<tissue>`` for each non-zero label present in ``labels``.
    ``cache``: one ``TargetCache`` per subject, to score several predictions of it.
    """
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape}, target {target.shape}, mask {mask.shape}")
    cache = cache or TargetCache()
    cache.bind(target, mask)
    mask = cache.get("mask", lambda: np.asarray(mask) > 0)
    r = cache.get(("data range", data_range), lambda: resolve_data_range(target, mask, data_range))
    p64 = pred.astype(np.float64)
    t64 = cache.get("float64", lambda: target.astype(np.float64))
    t64_inside = cache.get("float64 inside", lambda: t64[mask])
    diff = p64 - t64
    inside = diff[mask]
    ssim_in_mask, ssim_full = volume_ssim(p64, t64, mask, r, cache)
    rmse = math.sqrt(float(np.mean(inside**2)))
    out = {
        "psnr": psnr(p64[mask], t64_inside, r),
        "ssim": ssim_in_mask,
        "ssim2d": ssim2d_mean(p64, t64, mask, r, cache=cache),
        "mae": float(np.mean(np.abs(inside))),
        "nrmse": rmse / r,
        "pearson": pearson(p64[mask], t64_inside),
        "psnr_full": psnr(p64, t64, r),
        "ssim_full": ssim_full,
        "mae_full": float(np.mean(np.abs(diff))),
        "data_range": r,
        **scale_invariant_metrics(p64, t64, mask, cache),
    }
    if labels is not None:
        if labels.shape != target.shape:
            raise ValueError(f"labels shape {labels.shape} does not match target {target.shape}")
        names = tissue_names()
        for code in np.unique(labels):
            code = int(code)
            if code == 0:
                continue
            name = names.get(code, f"label{code}")
            out[f"mae_{name}"] = float(np.mean(np.abs(diff[labels == code])))
    return out


def _literature_targets(target: np.ndarray, mask: np.ndarray | None, axis: int) -> list[tuple[int, np.ndarray, Any]]:
    """(index, slice scaled to [0, 1], its window moments) of each target slice the protocol scores."""
    kept = []
    masks = slices_along(mask, axis) if mask is not None else [None] * target.shape[axis]
    for i, (t, m) in enumerate(zip(slices_along(target.astype(np.float64), axis), masks)):
        if (m is not None and not m.any()) or t.max() == t.min():
            continue
        t = (t - t.min()) / (t.max() - t.min())
        kept.append((i, t, window_moments(t)))
    return kept


def literature_slice_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, axis: int = AXIAL_AXIS,
    cache: TargetCache | None = None,
) -> dict[str, float]:
    """The protocol common in synthesis papers: 2D slices, each image scaled to [0, 1] on its own.

    Each axial slice of the prediction and of the target is min-max scaled by its own extremes
    (= division by its maximum for non-negative images with a zero background); PSNR and SSIM
    (data range 1, same Gaussian window, SSIM without the window border as scikit-image) are
    computed over the whole slice and averaged over
    slices that hold foreground (the mask when given, else a non-constant target).
    Numbers from this protocol are higher than the in-mask ones and not comparable to them.
    ``cache``: as ``volume_metrics``'.
    """
    cache = cache or TargetCache()
    cache.bind(target, mask)
    psnrs, ssims = [], []
    slices = slices_along(pred.astype(np.float64), axis)
    for i, t, moments in cache.get(("literature", axis), lambda: _literature_targets(target, mask, axis)):
        p = slices[i]
        p_span = p.max() - p.min()
        p = (p - p.min()) / p_span if p_span > 0 else np.zeros_like(p)
        psnrs.append(psnr(p, t, 1.0))
        ssims.append(mean_without_border(ssim_map(p, t, 1.0, moments)))
    return {
        "psnr_lit": float(np.mean(psnrs)) if psnrs else math.nan,
        "ssim_lit": float(np.mean(ssims)) if ssims else math.nan,
        "n_slices_lit": float(len(psnrs)),
    }
