"""The preprocessing contract of a run: what its model expects of an input, what it promises out.

Training fixes it once (from the config and the training subjects) and writes it into the run
(``preprocessing.json``, copied into the portable weight file); validation, ``evaluate`` and
``predict`` all read it, so the three cannot drift apart:

- ``mask``: how the brain/foreground mask of the training subjects was made (``given`` files,
  ``otsu``, ``nonzero`` voxels of an already skull-stripped T1, or ``none``). The T1 is
  normalized with statistics from inside this mask, so an input masked differently (a head
  mask for a brain-trained model) is shifted and scaled differently; ``predict`` therefore
  requires a brain mask (``--mask`` or ``--skull-strip``) from a run trained on given masks.
- ``normalization`` / ``percentiles``: the intensity normalization of T1 and T2, and what it
  learned on the training subjects (``nyul``'s standard scales of T1 and T2, applied to every
  later input: a T1-only input uses the T1's).
- ``slice_axis`` / ``planes`` / ``min_foreground``: which slices training saw (2D: along
  ``slice_axis``, or along all three axes); other slices are still synthesized, and their output
  is bounded by the clip range. Only a model trained on all three planes is applied along all
  three (``eval.planes: all``).
- ``t2_reference``: the output units (mean T2 normalization statistics of the training set).
- ``t2_range``: min and max of the training T2s inside their masks, in normalized units, narrowed
  so that the output mapping keeps them inside the training T2s' own intensities
  (:func:`output_t2_range`). Every synthesized volume is clipped to it, so no output leaves
  the intensities the model was trained to produce (and none is negative in output units).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.config import DataConfig
from mrsynth.data.discovery import SubjectFiles
from mrsynth.data.extent import EXTENT_SUBJECTS, MASK_EXTENTS, training_mask_extent
from mrsynth.data.io import read_nifti
from mrsynth.data.normalization import NormStats
from mrsynth.data.preprocess import Volume
from mrsynth.errors import MrsynthError

CONTRACT_FILE = "preprocessing.json"
MASK_SOURCES = ("given", "otsu", "nonzero", "skull-strip", "none")
ORIENTATION = "RAS+"  # every array the network sees (inputs are reoriented on read)
FLOOR_STEPS = 8  # float32 steps of the output scale within which the output floor counts as 0


@dataclass(frozen=True)
class PreprocessingContract:
    mask: str
    normalization: str
    percentiles: tuple[float, float]
    slice_axis: int
    min_foreground: float
    t2_reference: NormStats
    t2_range: tuple[float, float]
    subjects: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    nyul_t1_landmarks: tuple[float, ...] = ()
    nyul_t2_landmarks: tuple[float, ...] = ()
    planes: str = "slice_axis"
    mask_extent: str | None = None  # None: a run from before mrsynth recorded it
    voxel_size: tuple[float, float, float] | None = None  # None: a run from before; never resampled

    def check_planes(self, planes: str, where: str) -> None:
        """Refuse to apply a model along axes it never saw slices of."""
        if planes == "all" and self.planes != "all":
            raise MrsynthError(f"{where}: planes 'all' needs a model trained on slices of all three axes "
                               f"(data.planes: all); this one saw slices along axis {self.slice_axis} only")

    def output_range(self) -> tuple[float, float]:
        """The clip range in output (training T2) units. A floor within float32 rounding of 0 is
        0: the training T2s' usual floor, an MR background of 0, comes back through their float32
        normalized values up to a few float32 steps of the offset off (-8.5e-5 at an offset of
        780), which would let a synthesized T2 go negative."""
        lo, hi = (float(v * self.t2_reference.scale + self.t2_reference.offset) for v in self.t2_range)
        rounding = FLOOR_STEPS * float(np.spacing(np.float32(max(abs(self.t2_reference.offset), abs(hi)))))
        return (0.0 if abs(lo) <= rounding else lo), hi

    def to_output_units(self, t2: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """A synthesized T2 in normalized units as training-T2 units (float32, 0 outside
        ``inside``), clipped to :meth:`output_range` after the mapping, so that its rounding
        cannot leave the range (at an offset of 780 it gave -6.1e-5 where the floor is 0)."""
        lo, hi = self.output_range()
        return np.where(inside, np.clip(self.t2_reference.denormalize(t2), lo, hi), 0.0).astype(np.float32)

    def data_config(self, base: DataConfig, mask: str | None = None) -> DataConfig:
        """``base`` with the contract's preprocessing (and ``mask`` policy, default the contract's)."""
        return dataclasses.replace(
            self.with_learned_normalization(base), mask=mask or self.mask, normalization=self.normalization,
            percentiles=tuple(self.percentiles), slice_axis=self.slice_axis, planes=self.planes,
            min_foreground=self.min_foreground,
        )

    def with_learned_normalization(self, base: DataConfig) -> DataConfig:
        """``base`` with what the normalization learned on the training subjects (nyul's scales)."""
        if self.normalization != "nyul":
            return base
        return dataclasses.replace(base, nyul_t1_landmarks=self.nyul_t1_landmarks,
                                   nyul_t2_landmarks=self.nyul_t2_landmarks)

    def to_json(self) -> dict[str, Any]:
        raw = {
            "mask": self.mask,
            "normalization": self.normalization,
            "percentiles": list(self.percentiles),
            "slice_axis": self.slice_axis,
            "planes": self.planes,
            "min_foreground": self.min_foreground,
            "t2_reference": self.t2_reference.to_json(),
            "t2_range": list(self.t2_range),
            "mask_extent": self.mask_extent,
            "voxel_size": None if self.voxel_size is None else list(self.voxel_size),
            "orientation": ORIENTATION,
            "subjects": self.subjects,
        }
        if self.normalization == "nyul":
            raw["nyul_t1_landmarks"] = list(self.nyul_t1_landmarks)
            raw["nyul_t2_landmarks"] = list(self.nyul_t2_landmarks)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str) -> PreprocessingContract:
        try:
            contract = cls(
                mask=str(raw["mask"]), normalization=str(raw["normalization"]),
                percentiles=tuple(float(p) for p in raw["percentiles"]),  # type: ignore[arg-type]
                slice_axis=int(raw["slice_axis"]), min_foreground=float(raw["min_foreground"]),
                t2_reference=NormStats.from_json(raw["t2_reference"]),
                t2_range=tuple(float(v) for v in raw["t2_range"]),  # type: ignore[arg-type]
                subjects={k: list(v) for k, v in raw.get("subjects", {}).items()},
                nyul_t1_landmarks=tuple(float(v) for v in raw.get("nyul_t1_landmarks", ())),
                nyul_t2_landmarks=tuple(float(v) for v in raw.get("nyul_t2_landmarks", ())),
                planes=str(raw.get("planes", "slice_axis")),  # runs from before data.planes: one axis
                mask_extent=None if raw.get("mask_extent") is None else str(raw["mask_extent"]),
                voxel_size=_voxel_size(raw.get("voxel_size")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MrsynthError(f"{where}: incomplete preprocessing contract ({type(exc).__name__}: {exc})") from None
        if contract.mask not in MASK_SOURCES:
            raise MrsynthError(f"{where}: unknown mask source {contract.mask!r}")
        if contract.planes not in ("slice_axis", "all"):
            raise MrsynthError(f"{where}: unknown planes {contract.planes!r}")
        if contract.mask_extent is not None and contract.mask_extent not in MASK_EXTENTS:
            raise MrsynthError(f"{where}: unknown mask extent {contract.mask_extent!r}")
        if contract.normalization == "nyul" and not (contract.nyul_t1_landmarks and contract.nyul_t2_landmarks):
            raise MrsynthError(f"{where}: incomplete preprocessing contract (nyul without its standard scales)")
        return contract


def _voxel_size(raw: Any) -> tuple[float, float, float] | None:
    if raw is None:
        return None
    size = tuple(float(v) for v in raw)
    if len(size) != 3 or not all(np.isfinite(v) and v > 0 for v in size):
        raise ValueError(f"voxel_size {raw!r} is not three positive millimetre values")
    return size  # type: ignore[return-value]


def training_mask_source(cfg: DataConfig, files: list[SubjectFiles]) -> str:
    """How the training masks were made: ``given_or_otsu`` resolves to what the subjects had, and
    mask files whose manifest names the method that made them (``prepare-ixi``) count as it."""
    if cfg.mask not in ("given", "given_or_otsu"):
        return cfg.mask
    if not any(f.mask is not None for f in files):
        return "otsu" if cfg.mask == "given_or_otsu" else "given"
    methods = {f.mask_method for f in files}
    if len(methods) == 1 and next(iter(methods)) in ("otsu", "skull-strip"):
        return str(next(iter(methods)))
    return "given"


def training_extent(source: str, files: list[SubjectFiles], volumes: list[Volume]) -> str:
    """The extent of the training masks, judged on the first training subjects' raw T1s."""
    if source in ("none", "nonzero", "skull-strip"):
        return training_mask_extent(source, [])
    by_subject = {v.subject: v for v in volumes}
    looked = [(read_nifti(f.t1, what="T1")[0], np.asarray(by_subject[f.subject].mask))
              for f in files[:EXTENT_SUBJECTS] if f.subject in by_subject]
    return training_mask_extent(source, looked)


def training_voxel_size(volumes: list[Volume]) -> tuple[float, float, float]:
    """The voxel size the network learned at: the median over the training volumes, per RAS+ axis."""
    sizes = np.median(np.asarray([v.geometry.voxel_size for v in volumes], dtype=np.float64), axis=0)
    return tuple(round(float(v), 6) for v in sizes)  # type: ignore[return-value]


def build_contract(cfg: DataConfig, files: list[SubjectFiles], volumes: list[Volume],
                   subjects: dict[str, list[str]]) -> PreprocessingContract:
    """The contract of a run trained on ``volumes`` (the training subjects' preprocessed data).

    ``cfg`` carries what the normalization learned on them (:func:`mrsynth.data.preprocess.fit_training_normalization`).
    For ``nyul`` the T2 reference averages each volume's end-landmark frame (its NormStats).
    """
    with_t2 = [v for v in volumes if v.t2_stats is not None and v.t2 is not None]
    if not with_t2:
        raise MrsynthError("data: no training subject has a T2")
    reference = NormStats(offset=float(np.mean([v.t2_stats.offset for v in with_t2])),
                          scale=float(np.mean([v.t2_stats.scale for v in with_t2])))
    source = training_mask_source(cfg, files)
    return PreprocessingContract(
        mask=source, normalization=cfg.normalization,
        percentiles=tuple(cfg.percentiles), slice_axis=cfg.slice_axis,  # type: ignore[arg-type]
        min_foreground=cfg.min_foreground, t2_reference=reference, t2_range=output_t2_range(with_t2, reference),
        subjects=subjects,
        nyul_t1_landmarks=tuple(cfg.nyul_t1_landmarks), nyul_t2_landmarks=tuple(cfg.nyul_t2_landmarks),
        planes=cfg.planes, mask_extent=training_extent(source, files, volumes),
        voxel_size=training_voxel_size(volumes),
    )


def output_t2_range(volumes: list[Volume], reference: NormStats) -> tuple[float, float]:
    """The clip range, normalized units: the training T2s' range inside their masks, narrowed to
    the values that the output mapping (``reference``) takes into the training T2s' own range.

    Each subject is normalized with its own statistics but outputs are mapped back through the
    mean ones, so one subject's normalized minimum can map below every training T2 (a negative
    T2 where the subjects' offset-to-scale ratios differ); the narrowing keeps outputs in both.
    """
    inside = [(np.asarray(v.t2)[np.asarray(v.mask) > 0], v.t2_stats) for v in volumes]
    lo = min(float(x.min()) for x, _ in inside)
    hi = max(float(x.max()) for x, _ in inside)
    raw_lo = min(float(x.min()) * stats.scale + stats.offset for x, stats in inside)
    raw_hi = max(float(x.max()) * stats.scale + stats.offset for x, stats in inside)
    narrowed = (max(lo, (raw_lo - reference.offset) / reference.scale),
                min(hi, (raw_hi - reference.offset) / reference.scale))
    return narrowed if narrowed[0] < narrowed[1] else (lo, hi)


def write_contract(run_dir: Path, contract: PreprocessingContract) -> None:
    from mrsynth.fileio import atomic_write_text

    atomic_write_text(Path(run_dir) / CONTRACT_FILE, json.dumps(contract.to_json(), indent=2) + "\n")


def read_contract(run_dir: Path) -> PreprocessingContract:
    path = Path(run_dir) / CONTRACT_FILE
    if not path.is_file():
        raise MrsynthError(f"{run_dir}: no {CONTRACT_FILE} (a run from before mrsynth recorded its "
                           "preprocessing; train it again)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MrsynthError(f"{path}: corrupt file ({exc.msg})") from None
    return PreprocessingContract.from_json(raw, str(path))
