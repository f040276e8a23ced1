"""Shared test fixtures: tiny synthetic heads written as NIfTI files."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_fixtures import TINY_SHAPE, synthetic_head


@pytest.fixture
def write_nifti_file() -> Callable[..., Path]:
    """``write(path, data, affine=None)``: save an array as NIfTI (default 2 mm RAS+ affine)."""

    def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
        nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
        return path

    return write


@pytest.fixture
def ixi_head_dir(tmp_path: Path, write_nifti_file: Callable[..., Path]) -> Callable[..., Path]:
    """``make(n_subjects, with_mask=True)``: a folder of IXI-named T1/T2(/mask) synthetic heads."""

    def make(n_subjects: int = 3, with_mask: bool = True, shape: tuple[int, int, int] = TINY_SHAPE) -> Path:
        root = tmp_path / "ixi"
        for i in range(n_subjects):
            head = synthetic_head(shape, seed=i)
            stem = f"IXI{100 + i:03d}-Guys-{1000 + i:04d}"
            write_nifti_file(root / f"{stem}-T1.nii.gz", head["t1"])
            write_nifti_file(root / f"{stem}-T2.nii.gz", head["t2"])
            if with_mask:
                write_nifti_file(root / f"{stem}-mask.nii.gz", head["mask"])
        return root

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Callable[[str], tuple[Path, Path]]:
    """``get(backend) -> (home, run)``: an uninterrupted run of test_training_loop's
    ``tiny_overrides(home)``, trained on first use and shared by the session's tests (pytest-xdist:
    one per worker). Tests only read it; a run they compare with it is trained with
    ``tiny_overrides(home)`` too (the same phantom, cache and settings)."""
    home = tmp_path_factory.mktemp("tiny_runs")
    trained: dict[str, Path] = {}

    def get(backend: str) -> tuple[Path, Path]:
        if backend not in trained:
            from test_training_loop import train_tiny_run

            trained[backend] = train_tiny_run(home, backend)
        return home, trained[backend]

    return get
