"""Synthesize T2 NIfTI files from T1 files: the framework-free half of `run.py predict`.

Each output lies on its input's grid with the input's affine and header, in the T2 intensity
units of the training set (the mean T2 normalization statistics recorded by the run), zero
outside the foreground mask, written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mrsynth.backend import Predictor
from mrsynth.config import Config, config_from_dict
from mrsynth.data.io import write_like
from mrsynth.data.preprocess import NormStats, load_t1_only
from mrsynth.errors import DataError, MrsynthError
from mrsynth.evaluation.inference import synthesize_volume
from mrsynth.training import rundir
from mrsynth.weights import load_portable

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class SynthesisSetup:
    """What synthesis needs besides the predictor: the run's config and T2 output units."""

    cfg: Config
    t2_reference: NormStats


def setup_from_run(run_dir: Path) -> SynthesisSetup:
    norm = json.loads((Path(run_dir) / rundir.NORMALIZATION_FILE).read_text())
    return SynthesisSetup(rundir.load_run_config(run_dir), NormStats(**norm["t2_reference"]))


def setup_from_weights(path: Path) -> SynthesisSetup:
    """A portable weight file carries the config and normalization of the run that made it."""
    _, _, meta = load_portable(path)
    if "config" not in meta or "normalization" not in meta:
        raise MrsynthError(f"{path}: weight file has no training config/normalization metadata")
    norm = json.loads(meta["normalization"])
    return SynthesisSetup(config_from_dict(json.loads(meta["config"])), NormStats(**norm["t2_reference"]))


def list_inputs(source: Path) -> list[Path]:
    """One NIfTI file, or every NIfTI file in a directory (sorted)."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise DataError(f"{source}: no .nii or .nii.gz files in this directory")
        return files
    if not source.exists():
        raise DataError(f"{source}: input not found")
    return [source]


def output_name(t1_path: Path) -> str:
    """IXI302-HH-1904-T1.nii.gz -> IXI302-HH-1904-T1_synthT2.nii.gz (format kept)."""
    name = t1_path.name
    suffix = next((s for s in NIFTI_SUFFIXES if name.endswith(s)), "")
    return f"{name[: len(name) - len(suffix)]}_synthT2{suffix or '.nii.gz'}"


def synthesize_file(t1_path: Path, out_path: Path, predictor: Predictor, setup: SynthesisSetup) -> None:
    vol = load_t1_only(t1_path, setup.cfg.data)
    pred = synthesize_volume(vol.t1, predictor, setup.cfg.data, setup.cfg.eval)
    ref = setup.t2_reference
    t2 = np.where(vol.mask > 0, pred * ref.scale + ref.offset, 0.0).astype(np.float32)
    write_like(t2, vol.geometry, out_path)


def synthesize_files(inputs: list[Path], out_dir: Path, predictor: Predictor,
                     setup: SynthesisSetup) -> tuple[list[Path], list[str]]:
    """Synthesize every input; a bad file is reported and skipped, the rest still run."""
    written, failures = [], []
    for path in tqdm(inputs, desc="synthesize", unit="volume", disable=len(inputs) < 2):
        out = out_dir / output_name(path)
        try:
            synthesize_file(path, out, predictor, setup)
        except DataError as exc:
            failures.append(str(exc))
            continue
        written.append(out)
    return written, failures
