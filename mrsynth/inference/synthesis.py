"""Synthesize T2 NIfTI files from T1 files: the framework-free half of `run.py predict`.

Every input goes through the run's preprocessing contract (:mod:`mrsynth.data.contract`) and
the same whole-volume synthesis as validation and ``evaluate``
(:func:`mrsynth.inference.volume.synthesize_subject`). Each output lies on its input's
grid with the input's affine and header, in the T2 intensity units of the training set,
clipped to the training T2 range, zero outside the brain mask, marked as synthetic in its
header, with that mask (where the T2 was synthesized) and a JSON sidecar holding its provenance
beside it; all files of one input appear together (temporary names, then renames).

A folder job survives what a long run over a hospital export meets: a bad input is reported
and the job goes on; a failed write (full disk, quota, I/O error) stops the job with one line
naming the file and the free space; a killed job's temporaries are removed at the next start,
and ``skip_existing`` lets a re-run do only what is missing.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

import mrsynth
from mrsynth.backend import Predictor
from mrsynth.config import Config, config_from_dict, recorded_config
from mrsynth.console import progress_enabled
from mrsynth.data.contract import ORIENTATION, PreprocessingContract
from mrsynth.data.extent import looks_skull_stripped
from mrsynth.data.io import Geometry, image_like
from mrsynth.data.preprocess import MaskFn, load_t1_only, nonzero_foreground, otsu_foreground
from mrsynth.errors import DataError, MrsynthError
from mrsynth.inference.grid import ModelGrid, synthesize_on_model_grid
from mrsynth.inference.volume import Synthesis
from mrsynth.fileio import atomic_path, make_folder, remove_leftover_temporaries, sha256_of
from mrsynth.weights import load_portable

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NOTICE = "synthetic image, not for diagnosis"
SYNTHETIC_INTENT = f"synthT2w {mrsynth.__version__}"  # NIfTI intent_name of every synthetic T2 written
CLIPPED_WARN_FRACTION = 0.01  # warn when more of the brain than this was clipped
_T1_TOKEN = re.compile(r"[-_.](t1w?|t1_fcm)$", re.IGNORECASE)
_MASK_TOKEN = re.compile(r"[-_.](mask|brainmask|brain[-_]mask)$", re.IGNORECASE)


@dataclass
class SynthesisSetup:
    """What synthesis needs besides the predictor: the run's config, contract and weight provenance."""

    cfg: Config
    contract: PreprocessingContract
    weights: dict[str, Any] = field(default_factory=dict)


def tensors_sha256(tensors: dict[str, np.ndarray]) -> str:
    """A hash of the parameters alone (names, shapes, float32 bytes), independent of metadata.

    The same checkpoint gives the same value whether it is read from the run's model.safetensors
    or exported again, so an output can be traced to the exact weights.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype=np.float32)
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def setup_from_weights(path: Path, backend: str, run_dir: Path | None = None) -> SynthesisSetup:
    """A portable weight file carries the config and preprocessing contract of the run that made it.

    ``run_dir``: the file is a temporary export of that run's checkpoint (``predict --checkpoint``),
    so the provenance names the run instead of the file.
    """
    tensors, _, meta = load_portable(path)
    if "config" not in meta or "preprocessing" not in meta:
        raise MrsynthError(f"{path}: weight file has no training config/preprocessing metadata "
                           "(exported by an older mrsynth: export it again from its run)")
    contract = PreprocessingContract.from_json(json.loads(meta["preprocessing"]), str(path))
    weights = {
        "file": None if run_dir else str(Path(path).absolute()), "file_sha256": None if run_dir else sha256_of(path),
        "run_dir": str(Path(run_dir).absolute()) if run_dir else None, "backend": backend,
        "tensors_sha256": tensors_sha256(tensors), "framework": meta.get("framework"),
        "run": meta.get("run"), "checkpoint": meta.get("checkpoint"),
        "step": json.loads(meta["step"]) if "step" in meta else None,
        "run_summary": json.loads(meta["summary"]) if "summary" in meta else None,
    }
    return SynthesisSetup(config_from_dict(recorded_config(json.loads(meta["config"]))), contract, weights)


@contextlib.contextmanager
def exported_checkpoint(backend: Any, run_dir: Path, which: str):
    """The portable weight file of a run's ``which`` checkpoint, in a temporary folder.

    ``predict --checkpoint`` reads the run through this file, so a run and a weight file take
    one path and the provenance hash names exactly the weights used.
    """
    with tempfile.TemporaryDirectory(prefix="mrsynth-predict-") as tmp:
        path = Path(tmp) / "model.safetensors"
        backend.export_weights(Path(run_dir), path, which=which)
        yield path


# ---------------------------------------------------------------- masks


@dataclass(frozen=True)
class MaskPolicy:
    """How ``predict`` finds each input's brain mask.

    ``kind``: ``file`` (one mask for one input), ``dir`` (paired by subject id), ``nonzero``,
    ``otsu``, ``skull-strip``, ``none``, or ``contract``: made per input the way the training
    masks were (:class:`ContractMask`).
    """

    kind: str
    path: Path | None = None


def resolve_mask_policy(contract: PreprocessingContract, mask: str | None, skull_strip: bool,
                        where: str) -> MaskPolicy:
    """The mask policy for predict: a flag's, else the contract's; a one-line refusal where a run
    from before mrsynth recorded its mask extent was trained on given masks."""
    if mask is not None and skull_strip:
        raise MrsynthError("--mask and --skull-strip: choose one")
    if skull_strip:
        return MaskPolicy("skull-strip")
    if mask in ("nonzero", "otsu"):
        return MaskPolicy(mask)
    if mask is not None:
        path = Path(mask)
        if path.is_dir():
            return MaskPolicy("dir", path)
        if not path.is_file():
            raise DataError(f"{path}: mask file or folder not found (or use --mask nonzero|otsu)")
        return MaskPolicy("file", path)
    if contract.mask == "given" and contract.mask_extent is None:
        raise MrsynthError(
            f"{where}: this model was trained on given masks and its run does not record whether they were "
            "brain or head masks (trained before mrsynth recorded it); pass --mask FILE|DIR, --mask nonzero "
            "for skull-stripped inputs, --mask otsu for head masks, or --skull-strip"
        )
    return MaskPolicy("contract")


class ContractMask:
    """Makes an input's mask the way the training masks were: the contract's extent decides.

    - ``head`` masks: the Otsu head mask (what ``prepare-ixi`` and the loader compute);
    - ``brain`` masks: an already skull-stripped input keeps its non-zero brain (or its Otsu
      mask, where training used that); a T1 with skull gets its brain extracted (BET);
    - ``all``: no mask.

    Called with the raw RAS+ T1; ``made`` then says what was done (sidecar, output line).
    """

    def __init__(self, contract: PreprocessingContract):
        self.contract = contract
        self.made: dict[str, Any] = {}

    def extent(self) -> str:
        """The training masks' extent (runs from before it was recorded: from the mask source)."""
        if self.contract.mask_extent is not None:
            return self.contract.mask_extent
        return {"none": "all", "otsu": "head"}.get(self.contract.mask, "brain")

    def __call__(self, t1: np.ndarray, geometry: Geometry) -> np.ndarray:
        extent = self.extent()
        if extent == "all":
            self.made = {"source": "none", "why": "the model was trained without masks"}
            return np.ones(t1.shape, dtype=bool)
        head = otsu_foreground(t1)
        stripped = looks_skull_stripped(t1, head)
        if extent == "head":
            self.made = {"source": "otsu", "why": "the model was trained on head masks, but this T1 looks "
                         "skull-stripped: its Otsu mask is only its brain" if stripped
                         else "the model was trained on Otsu head masks"}
            return head
        if stripped:
            kind = "otsu" if self.contract.mask == "otsu" else "nonzero"
            self.made = {"source": kind, "why": "the model was trained on brains and this T1 is skull-stripped"}
            return head if kind == "otsu" else nonzero_foreground(t1)
        from mrsynth.data.skullstrip import extract_brain, method_description

        self.made = {"source": "skull-strip", "method": method_description(),
                     "why": "the model was trained on skull-stripped brains and this T1 has a skull"}
        return extract_brain(t1, geometry.voxel_size)


def mask_note(made: dict[str, Any]) -> str:
    """The output line's words for the mask predict made."""
    words = {"skull-strip": "brain extracted (BET)", "nonzero": "the non-zero brain", "otsu": "Otsu head mask",
             "none": "none (all voxels)", "given": "given file"}
    what = words.get(made["source"], made["source"])
    return f"{what}: {made['why']}" if "why" in made else what


def subject_id(path: Path) -> str:
    """``IXI002-Guys-0828-T1.nii.gz`` -> ``IXI002-Guys-0828``: the name without suffix and T1 token."""
    return _T1_TOKEN.sub("", strip_nifti_suffix(path.name))


def strip_nifti_suffix(name: str) -> str:
    suffix = next((s for s in NIFTI_SUFFIXES if name.endswith(s)), "")
    return name[: len(name) - len(suffix)]


def find_mask(mask_dir: Path, t1_path: Path) -> Path:
    """The mask in ``mask_dir`` of the input's subject.

    Named ``<id>-mask``, ``<id>_mask``, ``<id>_brainmask`` or ``<id>_brain_mask`` (``<id>``: the
    input's name without its T1 token); only where there is none, a file named exactly like the
    input (a folder mirroring the inputs), unless it is a copy of the input itself (the data
    folder holding the subject's T1 beside its mask).
    """
    wanted = subject_id(t1_path)
    mirrored = strip_nifti_suffix(t1_path.name)
    named, same_name = [], []
    for p in nifti_files(mask_dir):
        if p.resolve() == t1_path.resolve():
            continue
        stem = strip_nifti_suffix(p.name)
        if _MASK_TOKEN.search(stem) and _MASK_TOKEN.sub("", stem) == wanted:
            named.append(p)
        elif stem == mirrored:
            same_name.append(p)
    if not named and same_name:
        own = sha256_of(t1_path)
        same_name = [p for p in same_name if sha256_of(p) != own]
    matches = named or same_name
    if not matches:
        raise DataError(f"{t1_path}: no mask for subject {wanted!r} in {mask_dir} "
                        f"(expected e.g. {wanted}-mask.nii.gz)")
    if len(matches) > 1:
        raise DataError(f"{t1_path}: several masks for subject {wanted!r} in {mask_dir}: "
                        + ", ".join(p.name for p in matches))
    return matches[0]


@dataclass
class InputMask:
    """How one input's mask is made: the ``data.mask`` setting for the loader, a mask file or a
    mask function (:class:`ContractMask`, brain extraction)."""

    setting: str
    file: Path | None = None
    fn: MaskFn | None = None

    def describe(self) -> dict[str, Any]:
        """The sidecar's ``Mask`` block, once the mask was made."""
        if self.file is not None:
            return {"source": "given", "file": str(self.file.absolute()), "sha256": sha256_of(self.file)}
        if isinstance(self.fn, ContractMask):
            return dict(self.fn.made)
        if self.fn is not None:
            from mrsynth.data.skullstrip import method_description

            return {"source": "skull-strip", "method": method_description()}
        return {"source": self.setting}


def input_mask(policy: MaskPolicy, t1_path: Path, contract: PreprocessingContract) -> InputMask:
    """How the mask of one input is made under ``policy``."""
    if policy.kind == "file":
        return InputMask("given", file=policy.path)
    if policy.kind == "dir":
        return InputMask("given", file=find_mask(policy.path, t1_path))  # type: ignore[arg-type]
    if policy.kind == "skull-strip":
        from mrsynth.data.skullstrip import extract_brain

        return InputMask("given", fn=lambda t1, geometry: extract_brain(t1, geometry.voxel_size))
    if policy.kind == "contract":
        return InputMask("given", fn=ContractMask(contract))
    return InputMask(policy.kind)


# ---------------------------------------------------------------- files


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI files of a folder (sorted), without hidden files (a killed writer's temporaries
    are hidden files too)."""
    return sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith("."))


def list_inputs(source: Path) -> list[Path]:
    """One NIfTI file, or every NIfTI file in a directory (sorted; hidden files left out)."""
    if source.is_dir():
        files = nifti_files(source)
        if not files:
            raise DataError(f"{source}: no .nii or .nii.gz files in this directory")
        return files
    if not source.exists():
        raise DataError(f"{source}: input not found")
    return [source]


def output_name(t1_path: Path, tag: str = "synthT2") -> str:
    """IXI302-HH-1904-T1.nii.gz -> IXI302-HH-1904-T1_synthT2.nii.gz (format kept)."""
    stem = strip_nifti_suffix(t1_path.name)
    return f"{stem}_{tag}{t1_path.name[len(stem):] or '.nii.gz'}"


def sidecar_name(t1_path: Path) -> str:
    return strip_nifti_suffix(output_name(t1_path)) + ".json"


def output_paths(t1_path: Path, out_dir: Path, uncertainty: bool = False) -> list[Path]:
    """Every file predict writes for one input: the T2, the mask it was synthesized in, the spread
    map if asked, the sidecar."""
    maps = [output_name(t1_path), output_name(t1_path, "synthT2_mask"),
            *([output_name(t1_path, "synthT2_std")] if uncertainty else [])]
    return [out_dir / name for name in (*maps, sidecar_name(t1_path))]


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[list[Path]]:
    """Hold ``path`` as a job's output folder; yield the killed writers' temporaries removed from it.

    Jobs share the folder (a shared flock on the folder itself, no lock file); the leftovers are
    removed only when no other job holds it, since another job's temporaries are live.
    """
    make_folder(path, f"--out {path}")
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            removed = remove_leftover_temporaries(path)
        except OSError:  # another job is writing here (or the filesystem has no locks): leave them
            removed = []
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield removed
    finally:
        os.close(fd)


@dataclass
class FileResult:
    """What predict wrote for one input."""

    written: list[Path]
    clipped_fraction: float
    warning: str | None = None
    mask: str = ""  # how the mask was made, in words
    grid: str = ""  # where the network ran, in words


def synthesize_file(t1_path: Path, out_dir: Path, predictor: Predictor, setup: SynthesisSetup,
                    policy: MaskPolicy, tta: str = "none", uncertainty: bool = False) -> FileResult:
    """Synthesize one input and write its T2, optional spread map and JSON sidecar together.

    The input is masked as the training subjects were, normalized on its own grid, synthesized
    at the training voxel size (:mod:`mrsynth.inference.grid`) and delivered on its own grid.
    """
    contract = setup.contract
    mask = input_mask(policy, t1_path, contract)
    data_cfg = contract.data_config(setup.cfg.data, mask=mask.setting)
    volume = load_t1_only(t1_path, data_cfg, mask=mask.file, mask_fn=mask.fn)
    synthesis, grid = synthesize_on_model_grid(volume.t1, volume.mask, volume.geometry.voxel_size, predictor,
                                               data_cfg, setup.cfg.eval, contract, tta=tta)
    ref = contract.t2_reference
    inside = volume.mask > 0
    t2 = contract.to_output_units(synthesis.t2, inside)
    tag = f"mrsynth {mrsynth.__version__} synthetic T2w from T1w - {NOTICE}"
    t2_path, mask_path, *spread_path, sidecar_path = output_paths(t1_path, out_dir, uncertainty)
    images = {
        t2_path: image_like(t2, volume.geometry, descrip=tag, intent_name=SYNTHETIC_INTENT),
        # Where the T2 was synthesized: a 0 of the T2 inside it is a synthesized dark voxel, outside not.
        mask_path: image_like(inside, volume.geometry, dtype=np.uint8, intent_name="synthT2w mask",
                              descrip=f"mrsynth {mrsynth.__version__} brain mask the synthetic T2w was made in"),
    }
    if uncertainty:
        if synthesis.spread is None:
            raise MrsynthError("--uncertainty needs --tta flip or --planes all (the spread over the passes)")
        spread = np.where(inside, synthesis.spread * ref.scale, 0.0).astype(np.float32)
        images[spread_path[0]] = image_like(
            spread, volume.geometry, descrip=f"mrsynth {mrsynth.__version__} TTA spread (std) of the synthetic T2w",
            intent_name="synthT2w std")
    made = mask.describe()
    sidecar = _sidecar(t1_path, setup, made, volume, synthesis, grid, list(images), tta)
    written = _write_together(images, sidecar_path, sidecar)
    warning = None
    if synthesis.clipped_fraction > CLIPPED_WARN_FRACTION:
        lo, hi = contract.output_range()
        warning = (f"{t1_path}: {100 * synthesis.clipped_fraction:.1f}% of the brain voxels were clipped to the "
                   f"training T2 range [{lo:.4g}, {hi:.4g}]; the input may differ from the training data "
                   "(contrast, mask, field of view)")
    return FileResult(written, synthesis.clipped_fraction, warning, mask_note(made), grid_note(grid, volume))


def grid_note(grid: ModelGrid | None, volume: Any) -> str:
    """The output line's words for the grid the network ran on."""
    size = "x".join(f"{v:.3g}" for v in volume.geometry.voxel_size)
    if grid is None:
        return f"synthesized on the input's grid ({size} mm, {volume.geometry.axcodes})"
    model = "x".join(f"{v:.3g}" for v in grid.voxel_size)
    return f"resampled {size} mm -> {model} mm (the training voxel size) and back; output on the input's grid"


def _write_together(images: dict[Path, nib.Nifti1Image], sidecar_path: Path, sidecar: dict[str, Any]) -> list[Path]:
    """All files of one input under temporary names first, renamed only when all are written.

    A refused write removes every temporary and raises one line naming the file being written
    (a full disk is named by :func:`~mrsynth.fileio.atomic_path` itself).
    """
    current = sidecar_path
    try:
        with contextlib.ExitStack() as stack:
            for current, image in images.items():
                nib.save(image, str(stack.enter_context(atomic_path(current))))
            current = sidecar_path
            json_tmp = stack.enter_context(atomic_path(sidecar_path))
            json_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    except OSError as exc:
        raise MrsynthError(f"{current}: cannot write ({exc.strerror or exc})") from None
    return [*images, sidecar_path]


def _sidecar(t1_path: Path, setup: SynthesisSetup, mask: dict[str, Any], volume: Any, synthesis: Synthesis,
             grid: ModelGrid | None, outputs: list[Path], tta: str) -> dict[str, Any]:
    """BIDS-style provenance: enough to know what this file is and to reproduce it."""
    contract = setup.contract
    lo, hi = contract.output_range()
    return {
        "Description": f"Synthetic T2-weighted image generated from a T1-weighted image by mrsynth: {NOTICE}.",
        "Synthetic": True,
        "Notice": NOTICE,
        "Modality": "T2w",
        "GeneratedBy": [{"Name": "mrsynth", "Version": mrsynth.__version__, "Command": " ".join(sys.argv)}],
        "Sources": [str(t1_path.absolute())],
        "SourceSHA256": sha256_of(t1_path),
        "Outputs": [p.name for p in outputs],
        "Weights": setup.weights,
        "Mask": {**mask, "voxels": int((volume.mask > 0).sum())},
        "Grid": {"input_voxel_size_mm": [round(v, 4) for v in volume.geometry.voxel_size],
                 "input_orientation": volume.geometry.axcodes, "network_orientation": ORIENTATION,
                 **(grid.describe() if grid is not None else {
                     "resampled": False, "training_voxel_size_mm": (
                         None if setup.contract.voxel_size is None else list(setup.contract.voxel_size))})},
        "Normalization": {
            "method": contract.normalization,
            "t1_stats": volume.t1_stats.to_json(),
            "output_units": "training-set T2 intensities: normalized * scale + offset",
            "t2_reference": contract.t2_reference.to_json(),
        },
        "Clipping": {"range": [lo, hi], "range_normalized": list(contract.t2_range),
                     "clipped_fraction": synthesis.clipped_fraction},
        "TestTimeAugmentation": {"method": tta, "planes": setup.cfg.eval.planes, "passes": synthesis.passes},
        "Contract": {k: v for k, v in contract.to_json().items() if k != "subjects"},
    }


@dataclass
class JobReport:
    """What a predict job did with each input: written, failed (with the one-line reason), skipped."""

    results: list[FileResult] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    stopped: str | None = None  # the error that ended the job before its last input
    not_attempted: int = 0

    def summary(self) -> str:
        """``N written, M failed, S skipped`` (and the inputs left when the job stopped)."""
        text = f"{len(self.results)} written, {len(self.failed)} failed, {len(self.skipped)} skipped"
        return text + (f", {self.not_attempted} not attempted (stopped)" if self.stopped else "")


def synthesize_files(inputs: list[Path], out_dir: Path, predictor: Predictor, setup: SynthesisSetup,
                     policy: MaskPolicy, tta: str = "none", uncertainty: bool = False,
                     skip_existing: bool = False) -> JobReport:
    """Synthesize every input: a bad input is reported and the job goes on; any other user-facing
    error (a full disk, an impossible option) stops it, since every later input would fail too."""
    report = JobReport()
    for index, path in enumerate(tqdm(inputs, desc="synthesize", unit="volume", disable=len(inputs) < 2 or not progress_enabled())):
        if skip_existing and all(p.is_file() for p in output_paths(path, out_dir, uncertainty)):
            report.skipped.append(path)
            continue
        try:
            report.results.append(synthesize_file(path, out_dir, predictor, setup, policy, tta, uncertainty))
        except DataError as exc:
            report.failed.append((path, str(exc)))
        except MrsynthError as exc:
            report.failed.append((path, str(exc)))
            report.stopped = str(exc)
            report.not_attempted = len(inputs) - index - 1
            break
    return report
