"""The orthogonal views of a RAS+ volume as figures show them: which slice, which way up, which
patient direction at each edge, at which pixel proportions. Plain numpy, so that the command
line can offer the display conventions without importing matplotlib."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VIEWS = ("axial", "coronal", "sagittal")  # RAS+: axial = fixed z, coronal = fixed y, sagittal = fixed x
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
CONVENTIONS = ("neurological", "radiological")
# Patient directions at the (left, right, top, bottom) edges of a view in neurological display
# (the patient's left on the image's left); radiological display mirrors axial and coronal views.
_EDGES = {"axial": ("L", "R", "A", "P"), "coronal": ("L", "R", "S", "I"), "sagittal": ("P", "A", "S", "I")}


def mask_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the mask's centre of mass (the volume centre for an empty mask)."""
    idx = np.argwhere(mask > 0)
    if idx.size == 0:
        return tuple(int(s // 2) for s in mask.shape)  # type: ignore[return-value]
    return tuple(int(round(c)) for c in idx.mean(axis=0))  # type: ignore[return-value]


def _mirrored(view: str, convention: str) -> bool:
    if convention not in CONVENTIONS:
        raise ValueError(f"display convention {convention!r} is not one of {', '.join(CONVENTIONS)}")
    return convention == "radiological" and view != "sagittal"


def view_slice(volume: np.ndarray, view: str, centre: Sequence[int], convention: str = "neurological") -> np.ndarray:
    """A 2D slice for display, anterior or superior up; the patient's left on the image's left
    (neurological) or right (radiological; sagittal views are the same in both)."""
    axis = _VIEW_AXIS[view]
    image = np.rot90(np.take(volume, centre[axis], axis=axis))  # RAS+ (i, j) -> second axis up, first right
    return np.fliplr(image) if _mirrored(view, convention) else image


def view_aspect(view: str, voxel_size: Sequence[float]) -> float:
    """Height / width of a ``view_slice`` pixel: the slice's second axis (up) over its first."""
    first, second = (a for a in range(3) if a != _VIEW_AXIS[view])
    return float(voxel_size[second]) / float(voxel_size[first])


def edge_letters(view: str, convention: str = "neurological") -> tuple[str, str, str, str]:
    """The patient directions at the left, right, top and bottom edges of a ``view_slice``."""
    left, right, top, bottom = _EDGES[view]
    return (right, left, top, bottom) if _mirrored(view, convention) else (left, right, top, bottom)
