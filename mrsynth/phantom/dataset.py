"""The built-in synthetic phantom: paired T1w/T2w heads written as IXI-named NIfTI files.

It is the default data and the tests' data, so it must look like MR (folded cortex, partial
volume, relaxation-based contrast, bias, Rician noise; see ``phantom_anatomy``/``phantom_mri``)
and exercise the real reading path: files are stored in a non-RAS orientation (PSR, like the
IXI course data) and the reader has to reorient them to RAS+.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from mrsynth.config import DataConfig
from mrsynth.console import progress_enabled
from mrsynth.errors import ConfigError, DataError
from mrsynth.fileio import atomic_dir, atomic_write_text
from mrsynth.phantom.anatomy import CSF, GRAY_MATTER, TISSUE_NAMES, WHITE_MATTER, head_fractions
from mrsynth.phantom.mri import synthesize_contrasts
from mrsynth.data.io import save_nifti

log = logging.getLogger(__name__)

TISSUES: dict[int, str] = dict(enumerate(TISSUE_NAMES))
STORED_AXCODES = ("P", "S", "R")  # on-disk orientation (IXI course data); arrays are RAS+ in memory
MARKER_NAME = "phantom.json"
GENERATOR_VERSION = 1  # bump when the generator changes, so ensure_phantom regenerates
MAX_SUBJECTS = 99  # IXI901..IXI999
ROLES = ("T1", "T2", "mask", "labels")


@dataclass
class PhantomSubject:
    """One subject's RAS+ arrays: float32 signals, int16 labels (TISSUES codes), uint8 brain mask."""

    t1: np.ndarray
    t2: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    affine: np.ndarray  # RAS+ voxel -> world mm


def ras_affine(shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
    """Isotropic RAS+ affine with the world origin at the centre of the grid."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * voxel_mm
    return affine


def generate_subject(
    seed: int, shape: tuple[int, int, int] = (96, 112, 80), voxel_mm: float = 2.0
) -> PhantomSubject:
    """A random head, fully determined by ``seed``, on a RAS+ grid of ``shape`` voxels.

    Anatomy and acquisition draw from independent streams, so the same seed gives the same head
    at any grid size and changing the physics does not move the anatomy.
    """
    shape = tuple(int(n) for n in shape)
    anatomy_seed, mri_seed = np.random.SeedSequence(seed).spawn(2)
    fractions = head_fractions(np.random.default_rng(anatomy_seed), shape, voxel_mm)
    t1, t2 = synthesize_contrasts(np.random.default_rng(mri_seed), fractions)
    labels = np.argmax(fractions, axis=0).astype(np.int16)
    brain = fractions[CSF] + fractions[GRAY_MATTER] + fractions[WHITE_MATTER]
    mask = (brain >= 0.5).astype(np.uint8)
    return PhantomSubject(t1=t1, t2=t2, labels=labels, mask=mask, affine=ras_affine(shape, voxel_mm))


def subject_name(index: int, subject_seed: int) -> str:
    """IXI-style prefix, e.g. ``IXI901-Phantom-0001`` (number from the index, id from the seed)."""
    return f"IXI{901 + index}-Phantom-{subject_seed % 10000:04d}"


def _write_stored(array_ras: np.ndarray, affine_ras: np.ndarray, path: Path) -> None:
    """Write a RAS+ array in the stored (PSR) orientation, with the matching affine, atomically."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(STORED_AXCODES)
    )
    stored = np.ascontiguousarray(nib.orientations.apply_orientation(array_ras, transform))
    affine = affine_ras @ nib.orientations.inv_ornt_aff(transform, array_ras.shape)
    save_nifti(stored, affine, path)


def _marker(n_subjects: int, shape: tuple[int, int, int], seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "subjects": n_subjects, "shape": list(shape), "seed": seed}


def _check_request(n_subjects: int, shape) -> tuple[int, int, int]:
    if not 1 <= n_subjects <= MAX_SUBJECTS:
        raise ConfigError(f"data.phantom_subjects: must be 1..{MAX_SUBJECTS}, got {n_subjects}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ConfigError(f"data.phantom_shape: needs 3 sizes of at least 16, got {list(shape)}")
    return shape


def write_phantom_dataset(
    out_dir: Path, n_subjects: int, shape=(96, 112, 80), seed: int = 0, *, progress: bool | None = False
) -> list[Path]:
    """Write ``n_subjects`` phantom subjects (T1, T2, mask, labels per subject) and the marker.

    Each file is written atomically; the marker (``phantom.json``, the generation parameters) is
    written last. ``progress``: True shows a bar, None shows it only on a terminal. Returns the
    written NIfTI paths, subject by subject in the order T1, T2, mask, labels.
    """
    shape = _check_request(n_subjects, shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    disable = None if progress is None else not progress
    for index in tqdm(range(n_subjects), desc="phantom", unit="subject", disable=disable):
        subject_seed = 100 * seed + index + 1
        subject = generate_subject(subject_seed, shape)
        prefix = subject_name(index, subject_seed)
        arrays = {"T1": subject.t1, "T2": subject.t2, "mask": subject.mask, "labels": subject.labels}
        for role in ROLES:
            path = out_dir / f"{prefix}-{role}.nii.gz"
            _write_stored(arrays[role], subject.affine, path)
            written.append(path)
    atomic_write_text(out_dir / MARKER_NAME, json.dumps(_marker(n_subjects, shape, seed), indent=2) + "\n")
    return written


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _generation_lock(root: Path) -> Iterator[None]:
    """Serialise concurrent generators (e.g. several training processes) of the same root."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def regenerate_phantom(
    root: Path, n_subjects: int, shape=(96, 112, 80), seed: int = 0, *, progress: bool | None = None
) -> list[Path]:
    """Replace ``root`` with a freshly generated phantom dataset, all at once.

    Generation happens in a temporary sibling directory that is renamed onto ``root`` only when
    complete, so an interruption leaves the old state (or nothing). A non-empty ``root`` that is
    not a phantom dataset (no marker) is refused rather than deleted.
    """
    root = Path(root)
    shape = _check_request(n_subjects, shape)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and _read_marker(root) is None:
        raise DataError(
            f"{root}: not empty and not a phantom dataset (no {MARKER_NAME}); refusing to overwrite it"
        )
    with atomic_dir(root) as tmp:
        written = write_phantom_dataset(tmp, n_subjects, shape, seed, progress=progress)
    return [root / path.name for path in written]


def ensure_phantom(cfg: DataConfig) -> Path:
    """Generate the configured phantom into ``cfg.root`` unless it is already there; returns the root.

    The marker file records (generator version, subjects, shape, seed): a match makes this a
    no-op, an older generator regenerates. A root holding a phantom with other settings is
    refused: another run may be reading it (two runs would regenerate each other's data).
    """
    root = Path(cfg.root)
    shape = _check_request(cfg.phantom_subjects, cfg.phantom_shape)
    wanted = _marker(cfg.phantom_subjects, shape, cfg.phantom_seed)
    with _generation_lock(root):
        found = _read_marker(root)
        if found == wanted:
            return root
        settings = ("subjects", "shape", "seed")
        if found is not None and any(found.get(k) != wanted[k] for k in settings):
            have = ", ".join(f"{k}={found.get(k)}" for k in settings)
            want = ", ".join(f"{k}={wanted[k]}" for k in settings)
            raise ConfigError(f"data.root: {root} holds a phantom with {have}, the config asks for {want}; "
                              f"use another data.root, or delete {root} if no run uses it")
        log.info("generating %d phantom subjects %s into %s", cfg.phantom_subjects, list(shape), root)
        regenerate_phantom(root, cfg.phantom_subjects, shape, cfg.phantom_seed,
                           progress=None if progress_enabled() else False)
    return root
