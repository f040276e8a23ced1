"""NIfTI reading and writing: every array inside mrsynth is RAS+, every file keeps its own grid.

Volumes are reoriented to the closest canonical (RAS+) orientation on read (a pure axis
permutation/flip, no resampling), and the original affine and header are kept in a
:class:`Geometry` so :func:`write_like` puts a RAS+ result back onto the input's voxel order,
affine and header exactly. Bad files raise :class:`~mrsynth.errors.DataError` with one line
naming the file.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations

from mrsynth.errors import DataError
from mrsynth.fileio import atomic_path

_RAS = orientations.axcodes2ornt(("R", "A", "S"))
# A header claiming more than this is corrupt or not one brain volume: refused before any allocation.
MAX_VOXELS_PER_AXIS = 2048
MAX_FLOAT32_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Geometry:
    """What is needed to write a RAS+ array back onto a file's original grid and header."""

    affine: np.ndarray  # original voxel -> world (mm) matrix, 4x4 float64
    shape: tuple[int, int, int]  # original voxel grid
    header: bytes  # original NIfTI header block (348 bytes NIfTI-1, 540 NIfTI-2)
    source: str = ""  # file the geometry was read from (for messages)

    @property
    def ornt(self) -> np.ndarray:
        """Orientation of the stored axes (nibabel ornt), i.e. the file -> RAS+ transform."""
        return orientations.io_orientation(self.affine)

    @property
    def axcodes(self) -> str:
        """Stored orientation as letters, e.g. 'PSR' for the course data."""
        return "".join(orientations.aff2axcodes(self.affine))

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        perm = self.ornt[:, 0].astype(int)
        out = [0, 0, 0]
        for src, dst in enumerate(perm):
            out[dst] = self.shape[src]
        return tuple(out)  # type: ignore[return-value]

    @property
    def ras_affine(self) -> np.ndarray:
        """Voxel -> world matrix of the RAS+ array."""
        return self.affine @ orientations.inv_ornt_aff(self.ornt, self.shape)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) along the RAS+ array axes."""
        return tuple(float(v) for v in np.sqrt((self.ras_affine[:3, :3] ** 2).sum(axis=0)))

    def to_json(self) -> dict[str, Any]:
        return {
            "affine": self.affine.tolist(),
            "shape": list(self.shape),
            "header": base64.b64encode(self.header).decode("ascii"),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Geometry:
        return cls(
            affine=np.asarray(raw["affine"], dtype=np.float64),
            shape=tuple(int(s) for s in raw["shape"]),  # type: ignore[arg-type]
            header=base64.b64decode(raw["header"]),
            source=str(raw.get("source", "")),
        )

    def header_object(self) -> nib.Nifti1Header:
        cls = nib.Nifti2Header if len(self.header) == 540 else nib.Nifti1Header
        return cls(binaryblock=self.header)


def read_nifti(path: str | Path, *, what: str = "volume") -> tuple[np.ndarray, Geometry]:
    """Read a 3D NIfTI volume as a float32 RAS+ array plus the original :class:`Geometry`.

    Trailing singleton dimensions (x, y, z, 1) are accepted as 3D; anything else that is not
    3D, headers claiming more than :data:`MAX_VOXELS_PER_AXIS` voxels on an axis or
    :data:`MAX_FLOAT32_BYTES` of float32 data, non-finite voxels and unreadable files raise
    DataError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise DataError(f"{path}: not a readable NIfTI file ({_short(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI file (nibabel read it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {tuple(img.shape)} ({len(shape)}D)")
    nbytes = 4 * int(np.prod(shape, dtype=np.int64))
    if max(shape) > MAX_VOXELS_PER_AXIS or nbytes > MAX_FLOAT32_BYTES:
        raise DataError(f"{path}: the header claims {'x'.join(map(str, shape))} voxels ({nbytes / 2**30:.1f} GiB "
                        f"as float32), over the limit of {MAX_VOXELS_PER_AXIS} voxels per axis and "
                        f"{MAX_FLOAT32_BYTES // 2**30} GiB: a corrupt header or not a brain volume")
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except Exception as exc:  # truncated gzip: EOFError, zlib.error, OSError, ValueError
        raise DataError(f"{path}: unreadable or truncated NIfTI data ({_short(exc)})") from None
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{path}: {bad} voxels are NaN or Inf")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: the affine is singular or not finite")
    geometry = Geometry(affine=affine, shape=shape, header=bytes(img.header.binaryblock), source=str(path))
    return to_ras(data, geometry), geometry


def to_ras(data: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Reorder a stored-orientation array to RAS+ (axis permutation and flips only)."""
    return np.ascontiguousarray(orientations.apply_orientation(data, geometry.ornt))


def from_ras(volume_ras: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of :func:`to_ras`: a RAS+ array back in the file's stored axis order."""
    back = orientations.ornt_transform(_RAS, geometry.ornt)
    return np.ascontiguousarray(orientations.apply_orientation(volume_ras, back))


def image_like(volume_ras: np.ndarray, geometry: Geometry, *, descrip: str | None = None,
               intent_name: str | None = None, dtype: type = np.float32) -> nib.Nifti1Image:
    """A NIfTI image (float32 unless ``dtype`` says, e.g. uint8 for a mask) of a RAS+ array on the
    original grid, affine and header.

    Scaling (scl_slope/inter) and display range (cal_min/max) are reset, since they described
    the input's stored values, not these. ``descrip`` (80 bytes) and ``intent_name`` (16 bytes)
    replace the input's, e.g. to mark an output as synthetic.
    """
    volume_ras = np.asarray(volume_ras)
    if volume_ras.shape != geometry.ras_shape:
        raise DataError(
            f"array shape {volume_ras.shape} does not match the grid {geometry.ras_shape} "
            f"of {geometry.source or 'the input'}"
        )
    data = from_ras(volume_ras.astype(dtype, copy=False), geometry)
    header = geometry.header_object().copy()
    header.set_data_dtype(dtype)
    header.set_data_shape(data.shape)
    header.set_slope_inter(None, None)
    header["cal_min"] = 0
    header["cal_max"] = 0
    if descrip is not None:
        header["descrip"] = descrip.encode("ascii", "replace")[:79]
    if intent_name is not None:
        header["intent_name"] = intent_name.encode("ascii", "replace")[:15]
    image_cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_cls(data, geometry.affine, header)
    # Keep the input's qform/sform codes exactly (the constructor may bump them).
    original = geometry.header_object()
    image.set_sform(geometry.affine, code=int(original["sform_code"]))
    image.set_qform(geometry.affine, code=int(original["qform_code"]))
    return image


def write_like(volume_ras: np.ndarray, geometry: Geometry, path: Path, *, descrip: str | None = None,
               intent_name: str | None = None) -> None:
    """Write a RAS+ array as float32 NIfTI on the original grid, affine and header, atomically
    (``descrip`` / ``intent_name`` as :func:`image_like` sets them)."""
    try:
        image = image_like(volume_ras, geometry, descrip=descrip, intent_name=intent_name)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """A new NIfTI (mm units, qform = sform = ``affine``, scanner code), written atomically."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__
