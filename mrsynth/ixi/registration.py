"""Rigid T2-to-T1 registration, resampling grids, N4 and registration quality measures.

Raw IXI T1 (sagittal) and T2 (axial) come from separate acquisitions: their headers put them
roughly in the same scanner space, but the head moves between scans. A rigid (6 degrees of
freedom) Mattes mutual-information registration fixes that; the grid helpers then put both
images on one RAS+ voxel grid. Arrays here are RAS+ numpy volumes with a nibabel-style affine;
SimpleITK works in LPS physical space, so the conversion lives in one place (``to_sitk``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# RAS <-> LPS: negate x and y.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (2.0, 1.0, 0.0)


@dataclass(frozen=True)
class Grid:
    """A voxel grid in RAS+ world space: ``world = direction @ (spacing * ijk) + origin``."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: np.ndarray  # 3x3, orthonormal columns (RAS)
    origin: np.ndarray  # world position (mm, RAS) of voxel (0, 0, 0)

    @property
    def affine(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        out[:3, 3] = self.origin
        return out

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, ...]) -> Grid:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        return cls(
            tuple(int(s) for s in shape[:3]),
            tuple(float(s) for s in spacing),
            affine[:3, :3] / spacing[None, :],
            affine[:3, 3].copy(),
        )

    def reference(self) -> sitk.Image:
        """An empty SimpleITK image carrying this grid's geometry (for resampling onto it)."""
        image = sitk.Image([int(s) for s in self.shape], sitk.sitkUInt8)
        _set_geometry(image, self)
        return image

    def voxel_centres_world(self, mask: np.ndarray) -> np.ndarray:
        """RAS world coordinates (N, 3) of the voxels where ``mask`` is set."""
        ijk = np.argwhere(mask).astype(np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


def _set_geometry(image: sitk.Image, grid: Grid) -> None:
    image.SetSpacing([float(s) for s in grid.spacing])
    image.SetDirection((_RAS_TO_LPS @ grid.direction).flatten().tolist())
    image.SetOrigin((_RAS_TO_LPS @ grid.origin).tolist())


def to_sitk(volume: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """RAS+ array (i, j, k) with its affine -> float32 SimpleITK image in LPS physical space."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.astype(np.float32).transpose(2, 1, 0)))
    _set_geometry(image, Grid.from_affine(affine, volume.shape))
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> numpy array indexed (i, j, k) like the nibabel array it came from."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def registration_mask(head: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """Where the fixed image's metric samples: its head mask, dilated 3 voxels (the scalp edge
    counts: it is the strongest T1/T2 edge), as a uint8 SimpleITK mask."""
    return sitk.BinaryDilate(sitk.Cast(to_sitk(head.astype(np.float32), affine) > 0.5, sitk.sitkUInt8), [3, 3, 3])


def resample(
    image: sitk.Image,
    grid: Grid,
    transform: sitk.Transform | None = None,
    *,
    nearest: bool = False,
) -> np.ndarray:
    """Resample ``image`` onto ``grid`` (through ``transform``: grid point -> image point)."""
    out = sitk.Resample(
        image,
        grid.reference(),
        transform if transform is not None else sitk.Transform(),
        sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    return from_sitk(out)


def isotropic_grid(grid: Grid, spacing_mm: float) -> Grid:
    """Same orientation and field of view as ``grid``, ``spacing_mm`` isotropic voxels."""
    extent = np.asarray(grid.shape) * np.asarray(grid.spacing)
    shape = np.maximum(1, np.round(extent / spacing_mm)).astype(int)
    # Keep the field-of-view centre fixed.
    centre = grid.origin + grid.direction @ ((np.asarray(grid.shape) - 1) / 2 * np.asarray(grid.spacing))
    origin = centre - grid.direction @ ((shape - 1) / 2 * spacing_mm)
    return Grid(tuple(int(s) for s in shape), (spacing_mm,) * 3, grid.direction.copy(), origin)


def centred_grid(direction: np.ndarray, centre: np.ndarray, shape: tuple[int, int, int], spacing_mm: float) -> Grid:
    """A grid of fixed ``shape`` whose centre voxel lies at world point ``centre``."""
    shape_arr = np.asarray(shape, dtype=np.float64)
    origin = np.asarray(centre, dtype=np.float64) - direction @ ((shape_arr - 1) / 2 * spacing_mm)
    return Grid(tuple(int(s) for s in shape), (spacing_mm,) * 3, direction.copy(), origin)


@dataclass(frozen=True)
class RegistrationResult:
    transform: sitk.Euler3DTransform  # fixed (T1) point -> moving (T2) point, LPS
    mattes_before: float  # Mattes MI metric (lower is better) at the header alignment
    mattes_after: float
    rotation_deg: float  # size of the rotation found
    translation_mm: float  # size of the translation found (about the rotation centre)
    initializer: str  # which starting point won: header | geometry | moments


def rigid_register(
    fixed: sitk.Image,
    moving: sitk.Image,
    fixed_mask: sitk.Image | None = None,
    *,
    seed: int = 0,
    samples: int = 200_000,
    iterations: int = 200,
    bins: int = 32,
) -> RegistrationResult:
    """Rigid Mattes-MI registration, multi-resolution (shrink 4/2/1), deterministic for a seed.

    Each level samples about ``samples`` random voxels of the fixed image (all of them when it
    is smaller), so small and full-resolution images are treated alike.

    Three starting points are scored with the metric (header alignment, geometric centres,
    centres of mass) and the best one is optimized: the header is usually right for IXI, but
    a T2 field of view centred elsewhere must not send the optimizer off from a bad start.
    Results are reproducible for a given seed and thread count.
    """
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    n_voxels = math.prod(fixed.GetSize())

    def fraction(shrink: int) -> float:
        return min(1.0, samples * shrink**3 / n_voxels)

    def method(for_evaluation: bool) -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        # SimpleITK reads seed 0 as "use the wall clock": shift so every seed is reproducible.
        if for_evaluation:
            reg.SetMetricSamplingPercentage(fraction(1), seed + 1)
        else:
            reg.SetMetricSamplingPercentagePerLevel([fraction(f) for f in SHRINK_FACTORS], seed + 1)
        if fixed_mask is not None:
            reg.SetMetricFixedMask(fixed_mask)
        reg.SetInterpolator(sitk.sitkLinear)
        if not for_evaluation:
            reg.SetOptimizerAsRegularStepGradientDescent(
                learningRate=2.0,
                minStep=1e-4,
                numberOfIterations=iterations,
                relaxationFactor=0.5,
                gradientMagnitudeTolerance=1e-8,
            )
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
            reg.SetSmoothingSigmasPerLevel(list(SMOOTHING_SIGMAS_MM))
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return reg

    centre = _mask_centre(fixed, fixed_mask)
    header = sitk.Euler3DTransform()
    header.SetCenter(centre)
    candidates = {
        "header": header,
        "geometry": sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
        ),
        "moments": sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        ),
    }
    scores = {}
    for name, candidate in candidates.items():
        evaluator = method(for_evaluation=True)
        evaluator.SetInitialTransform(sitk.Euler3DTransform(candidate), inPlace=False)
        scores[name] = _metric(evaluator, fixed, moving)
    start = min(scores, key=scores.get)

    reg = method(for_evaluation=False)
    found = sitk.Euler3DTransform(candidates[start])
    reg.SetInitialTransform(found, inPlace=True)  # optimized in place: stays an Euler3DTransform
    reg.Execute(fixed, moving)
    # Score the result at full resolution, the same way as the header alignment.
    evaluator = method(for_evaluation=True)
    evaluator.SetInitialTransform(sitk.Euler3DTransform(found), inPlace=False)
    after = _metric(evaluator, fixed, moving)
    matrix = np.asarray(found.GetMatrix()).reshape(3, 3)
    angle = math.degrees(math.acos(float(np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0))))
    return RegistrationResult(
        transform=found,
        mattes_before=scores["header"],
        mattes_after=after,
        rotation_deg=angle,
        translation_mm=float(np.linalg.norm(found.GetTranslation())),
        initializer=start,
    )


def _metric(evaluator: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image) -> float:
    try:
        return float(evaluator.MetricEvaluate(fixed, moving))
    except RuntimeError:  # too few overlapping samples: the worst possible start
        return math.inf


def _mask_centre(image: sitk.Image, mask: sitk.Image | None) -> tuple[float, float, float]:
    """Physical centre of the mask (the rotation centre), or of the image without one."""
    if mask is None:
        index = [(s - 1) / 2 for s in image.GetSize()]
    else:
        coords = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
        index = coords.mean(axis=0)[::-1].tolist() if len(coords) else [(s - 1) / 2 for s in image.GetSize()]
    return image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])


def n4_correct(image: sitk.Image, mask: sitk.Image, *, target_spacing_mm: float = 4.0) -> sitk.Image:
    """N4 bias-field correction, fitted on a shrunk copy (speed) and applied at full resolution."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    shrink = [max(1, int(round(target_spacing_mm / s))) for s in image.GetSpacing()]
    small = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(sitk.Cast(mask, sitk.sitkUInt8), shrink)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 50, 50])  # 4 fitting levels: 3 leave a visible residual
    # N4 fits log intensities: keep the fitted region strictly positive.
    positive = sitk.Cast(sitk.And(small_mask, small > 0), sitk.sitkUInt8)
    corrector.Execute(small, positive)
    log_bias = corrector.GetLogBiasFieldAsImage(image)
    return image / sitk.Exp(log_bias)


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray, bins: int = 64) -> float:
    """Studholme's NMI = (H(A) + H(B)) / H(A, B) inside ``mask``: 1 unrelated, 2 identical."""
    x, y = a[mask > 0], b[mask > 0]
    if x.size < 2:
        return float("nan")
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    joint = joint / joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h_joint = entropy(joint)
    return (entropy(joint.sum(axis=1)) + entropy(joint.sum(axis=0))) / h_joint if h_joint > 0 else float("nan")


def edge_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma: float = 0.5) -> float:
    """Pearson correlation of the gradient magnitudes inside ``mask``: aligned edges score high.

    Blind to contrast polarity (CSF is dark in T1, bright in T2). ``sigma`` (voxels) stays
    small: wider smoothing merges the thin skull/CSF layers, whose edge profiles differ between
    the contrasts, and then misalignments of several mm no longer lower the score.
    """
    ga = ndimage.gaussian_gradient_magnitude(a.astype(np.float32), sigma)[mask > 0]
    gb = ndimage.gaussian_gradient_magnitude(b.astype(np.float32), sigma)[mask > 0]
    if ga.size < 2 or ga.std() == 0 or gb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ga, gb)[0, 1])
