"""MR physics of the phantom: tissue relaxation, sequence signal equations, bias field, Rician noise.

Relaxation values are typical 1.5 T brain/head numbers (order of magnitude as in Vymazal et al.,
Radiology 1999; the BrainWeb phantom, Kwan et al., IEEE TMI 1999; Bernstein et al., Handbook of MRI
Pulse Sequences, 2004; fat: Gold et al., AJR 2004), with a small per-subject variation.

T1w. IXI's T1 is a Philips 3D fast field echo (TR 9.8 ms, TE 4.6 ms, flip 8 deg). A plain spoiled
gradient echo with those numbers gives steady-state signals WM 0.055, GM 0.050, CSF 0.028 (PD
units): the right order but only ~10% WM/GM contrast, far flatter than the IXI images. Those
images look like an inversion-prepared (MP-RAGE / T1-TFE-like) acquisition, so the T1w signal
here is an inversion-recovery-prepared GRE: each shot inverts, waits TI, reads out with the small
flip and recovers for TD. Treating the readout as instantaneous, the steady-state longitudinal
magnetisation at readout is Mz = (1 - 2a + ab) / (1 + ab), a = exp(-TI/T1), b = exp(-TD/T1), and
S = PD * sin(flip) * Mz * exp(-TE/T2*). With TI = TD = 1000 ms: WM 0.38, GM 0.23, CSF 0.03,
fat 0.80 (x sin(flip)): WM > GM > CSF, bright scalp fat, dark bone.
T2w. IXI's T2 is a turbo spin echo (TR 8178 ms, TE 100 ms): S = PD (1 - exp(-TR/T1)) exp(-TE/T2),
giving CSF 0.83 > GM 0.28 > WM 0.18.
A voxel's signal is the fraction-weighted sum of its tissues' (signed) signals, then a magnitude,
a smooth multiplicative coil bias (independent per contrast), a receiver gain and Rician noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrsynth.phantom.anatomy import (
    BACKGROUND,
    CSF,
    GRAY_MATTER,
    SCALP_FAT,
    SKULL,
    WHITE_MATTER,
)
from mrsynth.phantom.fields import smooth_field

# (T1 ms, T2 ms, proton density relative to water) at 1.5 T.
NOMINAL_RELAXATION: dict[int, tuple[float, float, float]] = {
    BACKGROUND: (1000.0, 1.0, 0.0),  # air: no signal
    SCALP_FAT: (270.0, 85.0, 0.90),
    SKULL: (250.0, 1.0, 0.05),  # cortical bone: very short T2, almost no mobile protons
    CSF: (4000.0, 2000.0, 1.00),
    GRAY_MATTER: (1100.0, 95.0, 0.80),
    WHITE_MATTER: (650.0, 75.0, 0.70),
}
T2STAR_FRACTION = 0.8  # T2* ~ 0.8 T2 for the gradient echo


@dataclass(frozen=True)
class T1wSequence:
    """Inversion-prepared fast gradient echo with IXI's readout (see the module docstring)."""

    tr_ms: float = 9.8
    te_ms: float = 4.6
    flip_deg: float = 8.0
    ti_ms: float = 1000.0
    recovery_ms: float = 1000.0


@dataclass(frozen=True)
class T2wSequence:
    """(Turbo) spin echo with IXI's timing."""

    tr_ms: float = 8178.0
    te_ms: float = 100.0


@dataclass(frozen=True)
class Relaxation:
    """Per-tissue parameters, each indexed by label code."""

    t1_ms: np.ndarray
    t2_ms: np.ndarray
    pd: np.ndarray


def nominal_relaxation() -> Relaxation:
    values = np.array([NOMINAL_RELAXATION[code] for code in range(len(NOMINAL_RELAXATION))])
    return Relaxation(values[:, 0], values[:, 1], values[:, 2])


def sample_relaxation(rng: np.random.Generator, spread: float = 0.05) -> Relaxation:
    """The nominal values times a per-subject, per-tissue factor ~ exp(N(0, spread))."""
    nominal = nominal_relaxation()
    factors = np.exp(spread * np.clip(rng.standard_normal((3, nominal.pd.size)), -2.5, 2.5))
    return Relaxation(nominal.t1_ms * factors[0], nominal.t2_ms * factors[1], nominal.pd * factors[2])


def t1w_signal(tissue: Relaxation, seq: T1wSequence = T1wSequence()) -> np.ndarray:
    """Signed per-tissue T1w signal of the inversion-prepared GRE (PD units)."""
    a = np.exp(-seq.ti_ms / tissue.t1_ms)
    b = np.exp(-seq.recovery_ms / tissue.t1_ms)
    mz = (1.0 - 2.0 * a + a * b) / (1.0 + a * b)
    flip = np.radians(seq.flip_deg)
    return tissue.pd * np.sin(flip) * mz * np.exp(-seq.te_ms / (T2STAR_FRACTION * tissue.t2_ms))


def t2w_signal(tissue: Relaxation, seq: T2wSequence = T2wSequence()) -> np.ndarray:
    """Per-tissue spin-echo T2w signal (PD units)."""
    return tissue.pd * (1.0 - np.exp(-seq.tr_ms / tissue.t1_ms)) * np.exp(-seq.te_ms / tissue.t2_ms)


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth multiplicative receive-coil bias with a random +-10..20% peak deviation."""
    field = smooth_field(rng, shape, 3)
    amplitude = rng.uniform(0.10, 0.20)
    return np.exp(np.log1p(amplitude) * field / np.abs(field).max()).astype(np.float32)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of std ``sigma`` per channel."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def acquire(
    rng: np.random.Generator,
    fractions: np.ndarray,
    tissue_signal: np.ndarray,
    texture: np.ndarray,
    white_matter_level: float,
    noise_fraction: float,
) -> np.ndarray:
    """One contrast: mix tissue signals by fraction, bias, gain (WM ~ ``white_matter_level``), noise."""
    mixed = np.abs(np.tensordot(tissue_signal.astype(np.float32), fractions, axes=(0, 0))) * texture
    gain = white_matter_level / abs(float(tissue_signal[WHITE_MATTER]))
    clean = mixed * bias_field(rng, fractions.shape[1:]) * np.float32(gain)
    return rician(rng, clean, noise_fraction * white_matter_level).astype(np.float32)


def synthesize_contrasts(rng: np.random.Generator, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T1w and T2w magnitude images (float32, arbitrary scanner units) from tissue fractions.

    A shared +-2% proton-density texture (fine smooth field) keeps tissues from being flat.
    """
    tissue = sample_relaxation(rng)
    texture = 1.0 + 0.02 * np.clip(smooth_field(rng, fractions.shape[1:], 12), -3, 3)
    images = []
    for signal in (t1w_signal(tissue), t2w_signal(tissue)):
        wm_level, noise = 1000.0 * rng.uniform(0.8, 1.25), rng.uniform(0.02, 0.035)
        images.append(acquire(rng, fractions, signal, texture, wm_level, noise))
    return images[0], images[1]
