"""Random head anatomy for the phantom: per-voxel tissue fractions on a RAS+ grid.

The head is a set of nested surfaces in a head frame (a rotated, shifted, smoothly deformed copy
of the world grid): scalp/fat, skull, subarachnoid CSF, a folded grey-matter ribbon (sulci are the
zero lines of band-limited noise on the sphere, where the pial and white-matter surfaces dip, so
the grooves fill with CSF and are lined with grey matter), white matter, an interhemispheric
fissure, two curved lateral ventricles and deep grey nuclei. Each surface is a level function
turned into an approximate signed distance (phi / |grad phi|) and then into an inside fraction by
a one-voxel linear ramp: the box-filtered partial volume of a locally flat boundary.
"""
from __future__ import annotations

import numpy as np

from mrsynth.phantom.fields import SphereNoise, smooth_field

# Label codes (the order of the fraction channels).
BACKGROUND, SCALP_FAT, SKULL, CSF, GRAY_MATTER, WHITE_MATTER = range(6)
TISSUE_NAMES = ("background", "scalp_fat", "skull", "csf", "gray_matter", "white_matter")

# Semi-axes (R-L, A-P, S-I) in mm of an average adult head (scalp surface, cranium only).
REFERENCE_HEAD_MM = np.array([72.0, 90.0, 76.0])
# Deep structures in the reference head frame (mm from the head centre; x>0 right, y>0 anterior,
# z>0 superior): (centre, semi-axes) per hemisphere side for x = +centre and x = -centre.
DEEP_GRAY_MM = (
    ((9.0, -12.0, 2.0), (7.0, 13.0, 8.0)),  # thalamus
    ((21.0, 3.0, 0.0), (5.5, 14.0, 9.0)),  # lentiform nucleus (putamen + pallidum)
    ((12.0, 16.0, 9.0), (5.0, 9.0, 8.0)),  # head of the caudate
)


def _ramp(distance_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Inside fraction of a voxel whose centre lies ``distance_mm`` outside a flat boundary."""
    return np.clip(0.5 - distance_mm / voxel_mm, 0.0, 1.0).astype(np.float32)


def _gradient_norm(field: np.ndarray, voxel_mm: float) -> np.ndarray:
    return np.sqrt(sum(g * g for g in np.gradient(field, voxel_mm)))


def _as_distance(level: np.ndarray, voxel_mm: float) -> np.ndarray:
    """First-order signed distance phi/|grad phi| (sulcal walls and bent ellipsoids need it)."""
    return level / np.maximum(_gradient_norm(level, voxel_mm), 0.2)


def _slot(distance_mm: np.ndarray, half_width_mm: float, soft_mm: float = 1.0) -> np.ndarray:
    """1 within ``half_width_mm`` of a sheet, 0 outside, with a ``soft_mm`` linear edge."""
    return np.clip((half_width_mm - distance_mm) / soft_mm + 0.5, 0.0, 1.0)


def _ellipsoid_level(q: np.ndarray, centre, axes) -> np.ndarray:
    """Normalised ellipsoid level: negative inside, zero on the surface."""
    return np.sqrt(sum(((q[i] - centre[i]) / axes[i]) ** 2 for i in range(3))) - 1.0


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation about x (pitch), then y (roll), then z (yaw)."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _head_frame(rng: np.random.Generator, shape: tuple[int, int, int], voxel_mm: float, fit: float) -> np.ndarray:
    """Head-frame coordinates (3, X, Y, Z) in mm: world grid minus pose, plus a smooth deformation."""
    angles = np.radians([10.0, 5.0, 5.0]) * rng.uniform(-1, 1, 3)
    rotation = _rotation(angles)
    shift = 4.0 * fit * rng.uniform(-1, 1, 3)
    deform_mm = 3.0 * fit * rng.uniform(0.5, 1.0)
    world = np.stack(
        np.meshgrid(*[(np.arange(n, dtype=np.float32) - (n - 1) / 2) * voxel_mm for n in shape], indexing="ij")
    )
    for axis in range(3):
        world[axis] += deform_mm * smooth_field(rng, shape, 4) - float(shift[axis])
    return np.tensordot(rotation.T.astype(np.float32), world, axes=(1, 0))  # q = R^T p


def head_fractions(rng: np.random.Generator, shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
    """Tissue fractions (6, X, Y, Z) float32 summing to 1 per voxel, channel = label code.

    The head has a random size, shape, pose, deformation, tissue thicknesses, folding pattern and
    atrophy (wider CSF spaces and larger ventricles together). It keeps its physical size unless
    the field of view is too small for it, in which case the whole head shrinks to fit.
    """
    fov_mm = np.array(shape, dtype=float) * voxel_mm
    axes = REFERENCE_HEAD_MM * rng.uniform(0.93, 1.05) * rng.uniform(0.96, 1.04, 3)
    fit = min(1.0, float(np.min(0.46 * fov_mm / axes)))
    axes = axes * fit
    scale = (axes / REFERENCE_HEAD_MM).astype(np.float32)  # per axis, for the deep structures
    mean_scale = float(scale.mean())
    min_mm = 0.75 * voxel_mm  # keep every layer resolvable when the head is shrunk
    atrophy = rng.uniform(0.0, 1.0)

    q = _head_frame(rng, shape, voxel_mm, fit)
    radius_mm = np.sqrt((q * q).sum(axis=0))
    ellipsoid_r = np.sqrt(sum((q[i] / float(axes[i])) ** 2 for i in range(3)))
    mm_per_r = np.where(ellipsoid_r > 1e-3, radius_mm / np.maximum(ellipsoid_r, 1e-3), float(axes.mean()))
    directions = q / np.maximum(radius_mm, 1e-3)

    def thickness(low: float, high: float, variation: float) -> np.ndarray:
        base = max(rng.uniform(low, high) * mean_scale, min_mm)
        return base * (1.0 + variation * np.clip(smooth_field(rng, shape, 4), -2, 2))

    # Radial distance (mm) outside the scalp surface; the inner surfaces are offsets of it.
    outer = (ellipsoid_r - (1.0 + 0.03 * smooth_field(rng, shape, 3))) * mm_per_r
    skull_out = outer + thickness(4.0, 7.0, 0.2)
    skull_in = skull_out + thickness(5.0, 8.0, 0.25)
    brain = skull_in + np.maximum(thickness(1.5 + 1.5 * atrophy, 2.5 + 2.0 * atrophy, 0.3), 0.3 * min_mm)

    # Cortical folding: sulci are CSF slots around the zero lines of noise on the sphere, lined by
    # grey matter on both walls and at the fundus; the white-matter surface dips with them.
    folding = SphereNoise(rng, correlation=rng.uniform(0.07, 0.09))(directions)
    depth_mod = SphereNoise(rng, correlation=0.3)(directions)
    sulcal_depth = rng.uniform(12.0, 18.0) * mean_scale * (1.0 + 0.3 * np.clip(depth_mod, -2, 2))
    sulcal_mm = np.abs(folding) / np.maximum(_gradient_norm(folding, voxel_mm), 1e-3)
    half_gap = rng.uniform(0.5, 0.9) * (1.0 + atrophy) * mean_scale
    gm_thickness = max(rng.uniform(3.5, 4.5) * mean_scale, min_mm)
    # Interhemispheric fissure: a deep sagittal slot, absent towards the skull base.
    superior = np.clip((directions[2] + 0.35) / 0.3, 0.0, 1.0)
    fissure_depth = rng.uniform(30.0, 38.0) * mean_scale * superior
    fissure_mm = np.abs(q[0])
    pial_dip = np.maximum(
        sulcal_depth * _slot(sulcal_mm, half_gap), fissure_depth * _slot(fissure_mm, half_gap)
    )
    wm_dip = np.maximum(
        sulcal_depth * _slot(sulcal_mm, half_gap + gm_thickness),
        fissure_depth * _slot(fissure_mm, half_gap + gm_thickness),
    )
    pial = _as_distance(brain + pial_dip, voxel_mm)
    white = _as_distance(brain + gm_thickness + wm_dip, voxel_mm)

    ventricles = _ventricles_level(rng, q / scale[:, None, None, None], atrophy)
    deep_gray = np.min(
        [
            _ellipsoid_level(q / scale[:, None, None, None], (side * c[0], c[1], c[2]), a)
            for c, a in DEEP_GRAY_MM
            for side in (1.0, -1.0)
        ],
        axis=0,
    )

    h_head = _ramp(outer, voxel_mm)
    h_skull_out = np.minimum(_ramp(skull_out, voxel_mm), h_head)
    h_skull_in = np.minimum(_ramp(skull_in, voxel_mm), h_skull_out)
    h_pial = np.minimum(_ramp(pial, voxel_mm), h_skull_in)
    h_white = np.minimum(_ramp(white, voxel_mm), h_pial)
    h_vent = np.minimum(_ramp(_as_distance(ventricles, voxel_mm), voxel_mm), h_white)
    h_deep = np.clip(np.minimum(_ramp(_as_distance(deep_gray, voxel_mm), voxel_mm), h_white) - h_vent, 0, None)

    fractions = np.empty((6, *shape), dtype=np.float32)
    fractions[BACKGROUND] = 1.0 - h_head
    fractions[SCALP_FAT] = h_head - h_skull_out
    fractions[SKULL] = h_skull_out - h_skull_in
    fractions[CSF] = h_skull_in - h_pial + h_vent
    fractions[GRAY_MATTER] = h_pial - h_white + h_deep
    fractions[WHITE_MATTER] = h_white - h_vent - h_deep
    return fractions


def _ventricles_level(rng: np.random.Generator, q: np.ndarray, atrophy: float) -> np.ndarray:
    """Two lateral ventricles: ellipsoids bent down at both ends (frontal and occipital horns),
    closer together anteriorly; ``q`` is in reference-head mm."""
    size = 0.75 + 0.75 * atrophy
    y0 = rng.uniform(-5.0, 1.0)
    z0 = rng.uniform(10.0, 14.0)
    length = rng.uniform(24.0, 29.0)
    bend = rng.uniform(0.009, 0.014)
    levels = []
    for side in (1.0, -1.0):
        x0 = rng.uniform(8.0, 10.0)
        dy = q[1] - y0
        x_centre = side * (x0 - 0.15 * dy)
        z_centre = z0 - bend * dy * dy
        levels.append(
            np.sqrt(
                ((q[0] - x_centre) / (5.5 * size)) ** 2
                + (dy / length) ** 2
                + ((q[2] - z_centre) / (8.0 * size)) ** 2
            )
            - 1.0
        )
    return np.minimum(*levels)
