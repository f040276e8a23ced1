"""Smooth random fields for the phantom: low-frequency volumes and band-limited noise on the sphere.

Both are built from a fixed number of random draws that does not depend on the grid size, so one
seed describes the same head at any resolution, and both are cheap enough (separable sums, one
small interpolated cube) that a 128^3 subject takes well under a second of field work.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], n_basis: int) -> np.ndarray:
    """A zero-mean, unit-std random field over the grid made of the lowest cosine modes.

    ``n_basis`` modes per axis (k = 0..n_basis-1, half-wavelength FOV/k); amplitudes fall off as
    1/(1+|k|^2) so the field is dominated by the slowest variations, like a bias field or a
    gentle anatomical deformation.
    """
    k = np.arange(n_basis)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    coeffs = rng.standard_normal((n_basis,) * 3) / (1.0 + k2)
    coeffs[0, 0, 0] = 0.0
    bases = [
        np.cos(np.pi * k[:, None] * (np.arange(n)[None, :] + 0.5) / n).astype(np.float32) for n in shape
    ]
    # Separable sum, one axis at a time: (K,K,K) -> (X,K,K) -> (X,Y,K) -> (X,Y,Z).
    field = np.tensordot(bases[0].T, coeffs.astype(np.float32), axes=(1, 0))
    field = np.moveaxis(np.tensordot(field, bases[1], axes=(1, 0)), 2, 1)
    field = np.tensordot(field, bases[2], axes=(2, 0))
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


class SphereNoise:
    """Band-limited Gaussian noise evaluated at unit directions (a random pattern on the sphere).

    A white-noise cube over [-1.1, 1.1]^3 is Gaussian-smoothed with ``correlation`` (in units of
    the unit sphere's radius) and normalised to unit std; sampling it at unit vectors gives an
    isotropic random function of direction whose zero lines are spaced about 3 correlations apart
    (the cortical folding pattern uses them as sulci).
    """

    _EXTENT = 1.1
    _SIZE = 64

    def __init__(self, rng: np.random.Generator, correlation: float) -> None:
        spacing = 2 * self._EXTENT / (self._SIZE - 1)
        cube = ndimage.gaussian_filter(
            rng.standard_normal((self._SIZE,) * 3), correlation / spacing, mode="wrap"
        )
        self._cube = (cube / cube.std()).astype(np.float32)
        self._spacing = spacing

    def __call__(self, directions: np.ndarray) -> np.ndarray:
        """Noise at ``directions`` (3, ...) unit vectors; returns an array of shape ``...``."""
        index = (directions.reshape(3, -1) + self._EXTENT) / self._spacing
        values = ndimage.map_coordinates(self._cube, index, order=1, mode="nearest")
        return values.reshape(directions.shape[1:]).astype(np.float32)
