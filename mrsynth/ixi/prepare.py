"""Turn raw IXI T1/T2 pairs into registered, resampled, training-ready pairs plus a manifest.

Per subject: reorient to RAS+, rigidly register T2 to T1 (mutual information), resample both
onto one grid, optionally N4-correct, mask, optionally normalize, and write NIfTI files. The
manifest CSV (subject,t1,t2,mask + site, split and registration QC columns) is what
``data.source: manifest`` reads. Subjects run in parallel processes; a subject is finished
when its ``done.json`` exists (written last), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from mrsynth.ixi import registration as reg
from mrsynth.data.discovery import IXI_FILE_PATTERN
from mrsynth.data.io import read_nifti, save_nifti
from mrsynth.data.normalization import white_matter_peak
from mrsynth.data.preprocess import otsu_foreground
from mrsynth.ixi.registration import Grid, centred_grid, isotropic_grid
from mrsynth.errors import DataError
from mrsynth.fileio import atomic_path, atomic_write_text

COURSE_SHAPE_RAS = (90, 120, 120)  # the course's 120x120x90 PSR volumes, in RAS+ axis order
COURSE_SPACING_MM = 2.0
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.csv"
DONE_NAME = "done.json"
# A rigid T2->T1 registration that moves more than this is a wrong header or a wrong match,
# not head motion between two scans of one session: the subject is left out of the manifest.
MAX_TRANSLATION_MM = 50.0
MAX_ROTATION_DEG = 30.0


@dataclass(frozen=True)
class RawPair:
    subject: str  # IXI number, the pairing key: "IXI002"
    site: str
    stem: str  # "IXI002-Guys-0828"
    t1: Path
    t2: Path


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that changes the prepared files (a finished subject is reused only if equal)."""

    grid: str = "course"  # t1 | iso:MM | course
    n4: bool = False
    normalize: str = "none"  # none | zscore | wm_peak
    seed: int = 0
    skull_strip: bool = False  # brain masks by brain extraction instead of Otsu head masks

    def __post_init__(self) -> None:
        parse_grid(self.grid)
        if self.normalize not in ("none", "zscore", "wm_peak"):
            raise DataError(f"--normalize: {self.normalize!r} is not one of none, zscore, wm_peak")


@dataclass
class PrepareSummary:
    manifest: Path
    prepared: list[str] = field(default_factory=list)  # done in this run
    reused: list[str] = field(default_factory=list)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # subject -> reason
    unpaired: dict[str, str] = field(default_factory=dict)  # subject -> what is missing

    @property
    def n_ok(self) -> int:
        return len(self.prepared) + len(self.reused)

    def line(self) -> str:
        reasons = [f"{s}: {r}" for s, r in sorted(self.failed.items())]
        reasons += [f"{s}: {r}" for s, r in sorted(self.unpaired.items())]
        skipped = len(self.failed) + len(self.unpaired)
        text = f"{self.n_ok} prepared ({len(self.reused)} already done), {skipped} skipped"
        return text + (f" ({'; '.join(reasons)})" if reasons else "")


def parse_ixi_name(name: str) -> tuple[str, str, str, str] | None:
    """``IXI002-Guys-0828-T1.nii.gz`` -> ("IXI002", "Guys", "IXI002-Guys-0828", "T1"); else None."""
    match = IXI_FILE_PATTERN.match(name)
    if match is None:
        return None
    subject, site, scan, modality = match.group(1, 2, 3, 4)
    return subject, site, f"{subject}-{site}-{scan}", modality


def pair_ixi(t1_dir: Path, t2_dir: Path) -> tuple[list[RawPair], dict[str, str]]:
    """Pair T1 and T2 files by IXI subject number; return pairs and {subject: what is missing}."""
    found: dict[str, dict[str, tuple[str, str, Path]]] = {"T1": {}, "T2": {}}
    for modality, directory in (("T1", t1_dir), ("T2", t2_dir)):
        if not directory.is_dir():
            raise DataError(f"{directory}: not a directory")
        for path in sorted(directory.iterdir()):
            parsed = parse_ixi_name(path.name)
            if parsed is None or parsed[3] != modality:
                continue
            subject, site, stem, _ = parsed
            if subject in found[modality]:
                raise DataError(f"{path}: a second {modality} for {subject} ({found[modality][subject][2].name})")
            found[modality][subject] = (site, stem, path)
    pairs, unpaired = [], {}
    for subject in sorted(set(found["T1"]) | set(found["T2"])):
        t1, t2 = found["T1"].get(subject), found["T2"].get(subject)
        if t1 is None or t2 is None:
            have = t1 or t2
            unpaired[subject] = f"no {'T2' if t2 is None else 'T1'} (site {have[0]})"
        else:
            pairs.append(RawPair(subject, t1[0], t1[1], t1[2], t2[2]))
    return pairs, unpaired


def parse_grid(text: str) -> tuple[str, float | None]:
    """``t1`` | ``course`` | ``iso:MM`` -> (kind, millimetres or None)."""
    if text in ("t1", "course"):
        return text, None
    if text.startswith("iso:"):
        try:
            mm = float(text[4:])
        except ValueError:
            mm = -1.0
        if mm > 0:
            return "iso", mm
    raise DataError(f"--grid: {text!r} is not t1, course or iso:MM (e.g. iso:1.5)")


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise DataError(f"--split: {text!r} must be three fractions train,val,test summing to 1")
    return values  # type: ignore[return-value]


# ----------------------------------------------------------------------------- one subject


def _target_grid(settings: PrepareSettings, t1_grid: Grid, t1_mask_world_centre: np.ndarray) -> Grid:
    kind, mm = parse_grid(settings.grid)
    if kind == "t1":
        return t1_grid
    if kind == "iso":
        return isotropic_grid(t1_grid, mm)
    return centred_grid(t1_grid.direction, t1_mask_world_centre, COURSE_SHAPE_RAS, COURSE_SPACING_MM)


def normalize_pair(t1: np.ndarray, t2: np.ndarray, mask: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Optional intensity normalization (the training pipeline normalizes again either way).

    ``zscore``: zero mean, unit variance inside the mask, per image. ``wm_peak``: T1 divided
    by its white-matter histogram peak (``normalization.white_matter_peak``, the pipeline's own
    definition: WM = 1 like the course's FCM files); T2 divided by its median inside the
    T1-defined white matter (|T1 - 1| < 0.1), so both are in "white matter units".
    """
    if how == "none":
        return t1, t2
    inside = mask > 0
    if how == "zscore":
        def z(x: np.ndarray) -> np.ndarray:
            v = x[inside]
            return ((x - v.mean()) / max(float(v.std()), 1e-6)).astype(np.float32)

        return z(t1), z(t2)
    peak = white_matter_peak(t1[inside])
    t1n = (t1 / peak).astype(np.float32)
    wm = inside & (np.abs(t1n - 1.0) < 0.1)
    scale = float(np.median(t2[wm])) if wm.any() else 0.0
    if scale <= 0:
        raise DataError("wm_peak normalization: no white matter found in the T2 field of view")
    return t1n, (t2 / scale).astype(np.float32)


def _done_record(subject_dir: Path) -> dict | None:
    try:
        return json.loads((subject_dir / DONE_NAME).read_text())
    except (OSError, ValueError):
        return None


def registration_problem(mattes_after: float, translation_mm: float, rotation_deg: float) -> str | None:
    """Why a registration is unusable (failed, NaN, or an implausible move), or None when it is fine."""
    if not all(math.isfinite(float(v)) for v in (mattes_after, translation_mm, rotation_deg)):
        return f"registration failed (metric {mattes_after}, translation {translation_mm} mm)"
    if float(translation_mm) > MAX_TRANSLATION_MM:
        return (f"implausible registration: translation {float(translation_mm):.1f} mm > "
                f"{MAX_TRANSLATION_MM:g} mm (check the T2 header)")
    if float(rotation_deg) > MAX_ROTATION_DEG:
        return (f"implausible registration: rotation {float(rotation_deg):.1f} degrees > "
                f"{MAX_ROTATION_DEG:g} degrees (check the T2 header)")
    return None


def finished_row(subject_dir: Path, settings: PrepareSettings) -> dict | None:
    """The manifest row of a subject finished with the same settings, else None (redo it)."""
    record = _done_record(subject_dir)
    if record is None or record.get("settings") != asdict(settings):
        return None
    row = record.get("row", {})
    if not all((subject_dir / row.get(k, "")).is_file() for k in ("t1", "t2", "mask")):
        return None
    return row


def prepare_subject(pair: RawPair, out_dir: Path, settings: PrepareSettings, qc_png: bool) -> dict:
    """Register, resample, correct, mask and write one subject; returns its manifest row."""

    start = time.perf_counter()
    t1, t1_geometry = read_nifti(pair.t1, what="T1")
    t2, t2_geometry = read_nifti(pair.t2, what="T2")
    t1_affine, t2_affine = t1_geometry.ras_affine, t2_geometry.ras_affine
    t1_img, t2_img = reg.to_sitk(t1, t1_affine), reg.to_sitk(t2, t2_affine)
    t1_grid = reg.Grid.from_affine(t1_affine, t1.shape)

    native_mask = otsu_foreground(t1)
    if not native_mask.any():
        raise DataError(f"{pair.t1}: no foreground found (empty or constant image)")
    fixed_mask = reg.registration_mask(native_mask, t1_affine)
    try:
        result = reg.rigid_register(t1_img, t2_img, fixed_mask, seed=settings.seed)
    except RuntimeError as exc:  # ITK: e.g. too few overlapping samples
        raise DataError(f"{pair.t2}: registration failed ({str(exc).strip().splitlines()[-1]})") from None
    problem = registration_problem(result.mattes_after, result.translation_mm, result.rotation_deg)
    if problem is not None:
        raise DataError(f"{pair.t2}: {problem}")

    centre = t1_grid.voxel_centres_world(native_mask).mean(axis=0)
    grid = _target_grid(settings, t1_grid, centre)
    t1_out = reg.resample(t1_img, grid)
    t2_out = reg.resample(t2_img, grid, result.transform)
    t2_header = reg.resample(t2_img, grid)  # header alignment only: the "before" in the QC
    ones = reg.to_sitk(np.ones_like(t2), t2_affine)
    coverage = reg.resample(ones, grid, result.transform) > 0.999
    coverage_header = reg.resample(ones, grid) > 0.999
    mask = brain_or_head_mask(t1_out, grid, settings.skull_strip)
    if settings.n4:
        t1_out = reg.from_sitk(reg.n4_correct(reg.to_sitk(t1_out, grid.affine), mask_to_sitk(mask, grid)))
        t2_out = reg.from_sitk(reg.n4_correct(reg.to_sitk(t2_out, grid.affine), mask_to_sitk(mask & coverage, grid)))
    covered = float((mask & coverage).sum() / max(int(mask.sum()), 1))
    mask = mask & coverage
    if not mask.any():
        raise DataError(f"{pair.t2}: the registered T2 does not overlap the T1 head")
    t1_out, t2_out = normalize_pair(t1_out, t2_out, mask, settings.normalize)
    # QC region: the head with its outer edge (the mask cuts that edge in half), away from the
    # T2 field-of-view border (an edge T1 does not have), the same voxels before and after.
    inside_both = ndimage.binary_erosion(coverage & coverage_header, iterations=3)
    qc_region = ndimage.binary_dilation(mask, iterations=2) & inside_both

    subject_dir = out_dir / "subjects" / pair.subject
    names = {k: f"{pair.stem}-{suffix}.nii.gz" for k, suffix in (("t1", "T1"), ("t2", "T2"), ("mask", "mask"))}
    save_nifti(t1_out.astype(np.float32), grid.affine, subject_dir / names["t1"])
    save_nifti(t2_out.astype(np.float32), grid.affine, subject_dir / names["t2"])
    save_nifti(mask.astype(np.uint8), grid.affine, subject_dir / names["mask"])
    with atomic_path(subject_dir / "t2_to_t1.tfm") as tmp:
        sitk.WriteTransform(result.transform, str(tmp))
    if qc_png:
        write_qc_figure(out_dir / "qc" / f"{pair.stem}.png", t1_out, t2_header, t2_out, mask, pair.stem)

    row = {
        "subject": pair.subject,
        "site": pair.site,
        **names,
        "nmi_before": reg.normalized_mutual_information(t1_out, t2_header, qc_region),
        "nmi_after": reg.normalized_mutual_information(t1_out, t2_out, qc_region),
        "edge_corr_before": reg.edge_correlation(t1_out, t2_header, qc_region),
        "edge_corr_after": reg.edge_correlation(t1_out, t2_out, qc_region),
        "mattes_before": result.mattes_before,
        "mattes_after": result.mattes_after,
        "rotation_deg": result.rotation_deg,
        "translation_mm": result.translation_mm,
        "initializer": result.initializer,
        "t2_coverage": covered,
        "seconds": time.perf_counter() - start,
    }
    row = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
    atomic_write_text(subject_dir / DONE_NAME, json.dumps({"settings": asdict(settings), "row": row}, indent=1))
    return row


def mask_method(settings: PrepareSettings) -> str:
    """The manifest's ``mask_method``: how the mask files were made, so a run trained on them
    records it in its contract and ``predict`` makes the same masks itself."""
    return "skull-strip" if settings.skull_strip else "otsu"


def brain_or_head_mask(t1: np.ndarray, grid: Grid, skull_strip: bool) -> np.ndarray:
    """The subject's mask on ``grid``: a brain mask (brain extraction) or the Otsu head mask."""
    if not skull_strip:
        return otsu_foreground(t1)
    from mrsynth.data.skullstrip import extract_brain

    voxel_size = tuple(float(v) for v in np.linalg.norm(grid.affine[:3, :3], axis=0))
    return extract_brain(t1, voxel_size)  # type: ignore[arg-type]


def mask_to_sitk(mask: np.ndarray, grid: Grid) -> sitk.Image:
    """A uint8 SimpleITK mask on ``grid`` (N4 fits the bias field only inside it)."""

    return sitk.Cast(reg.to_sitk(mask.astype(np.float32), grid.affine) > 0.5, sitk.sitkUInt8)


def write_qc_figure(path: Path, t1: np.ndarray, t2_before: np.ndarray, t2_after: np.ndarray, mask: np.ndarray,
                    title: str) -> None:
    """T1 edges (red) over the T2, at the header alignment (top) and after registration (bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int) if mask.any() else np.array(t1.shape) // 2
    edges = ndimage.gaussian_gradient_magnitude(t1, 1.0)
    level = float(np.percentile(edges[mask > 0], 85)) if mask.any() else float(edges.max())
    fig = Figure(figsize=(9, 6), dpi=100)
    FigureCanvasAgg(fig)
    views = ("sagittal", "coronal", "axial")
    for row, (label, t2) in enumerate((("header alignment", t2_before), ("registered", t2_after))):
        vmax = float(np.percentile(t2[mask > 0], 99)) if mask.any() else float(t2.max()) or 1.0
        for axis in range(3):
            ax = fig.add_subplot(2, 3, row * 3 + axis + 1)
            index = [slice(None)] * 3
            index[axis] = int(centre[axis])
            ax.imshow(np.rot90(t2[tuple(index)]), cmap="gray", vmin=0, vmax=vmax)
            ax.contour(np.rot90(edges[tuple(index)]), levels=[level], colors="red", linewidths=0.5)
            ax.set_title(f"{views[axis]}: {label}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{title}: T1 edges (red) on T2")
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png")


# ----------------------------------------------------------------------------- all subjects


def assign_splits(subjects: dict[str, str], fractions: tuple[float, float, float], seed: int,
                  stratify_site: bool) -> dict[str, str]:
    """Subject -> train/val/test, deterministic for ``seed``; per site when ``stratify_site``."""
    groups: dict[str, list[str]] = {}
    for subject, site in subjects.items():
        groups.setdefault(site if stratify_site else "all", []).append(subject)
    out = {}
    for index, name in enumerate(sorted(groups)):
        members = sorted(groups[name])
        order = np.random.default_rng([seed, index]).permutation(len(members))
        n_val = int(round(len(members) * fractions[1]))
        n_test = int(round(len(members) * fractions[2]))
        n_train = len(members) - n_val - n_test
        for rank, i in enumerate(order):
            out[members[i]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return out


def write_manifest(out_dir: Path, rows: list[dict]) -> Path:
    """Manifest CSV with paths relative to it: subject,t1,t2,mask,mask_method,site,split,<QC columns>."""
    path = out_dir / MANIFEST_NAME
    first = ["subject", "t1", "t2", "mask", "mask_method", "site", "split"]
    extra = [k for k in rows[0] if k not in first] if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=first + extra, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["subject"]):
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())
    return path


def _init_worker(threads: int) -> None:
    """Share the cores between worker processes instead of each ITK filter taking all of them."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _run_one(pair: RawPair, out_dir: Path, settings: PrepareSettings, qc_png: bool) -> tuple[str, dict | str]:
    try:
        return "ok", prepare_subject(pair, out_dir, settings, qc_png)
    except Exception as exc:  # one bad subject must never stop the others
        message = str(exc).splitlines()[0] if str(exc) else ""
        return "failed", f"{type(exc).__name__}: {message}"


def prepare_ixi(
    t1_dir: Path,
    t2_dir: Path,
    out_dir: Path,
    settings: PrepareSettings,
    *,
    workers: int = 1,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    stratify_site: bool = False,
    qc_samples: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PrepareSummary:
    """Prepare every paired subject (resuming finished ones) and write the manifest."""
    pairs, unpaired = pair_ixi(Path(t1_dir), Path(t2_dir))
    if not pairs:
        raise DataError(f"{t1_dir}, {t2_dir}: no IXI T1/T2 pairs (expected names like IXI002-Guys-0828-T1.nii.gz)")
    out_dir = Path(out_dir)
    summary = PrepareSummary(manifest=out_dir / MANIFEST_NAME, unpaired=unpaired)
    for subject, reason in unpaired.items():
        log(f"unpaired: {subject}: {reason}")
    rng = np.random.default_rng(settings.seed)
    qc_subjects = {pairs[i].subject for i in rng.permutation(len(pairs))[: max(qc_samples, 0)]}

    rows: dict[str, dict] = {}
    todo = []
    reused_bad: dict[str, str] = {}
    for pair in pairs:
        row = finished_row(out_dir / "subjects" / pair.subject, settings)
        problem = None if row is None else registration_problem(
            row["mattes_after"], row["translation_mm"], row["rotation_deg"])
        if problem is not None:  # finished by a version that did not check its registration
            reused_bad[pair.subject] = f"DataError: {pair.t2}: {problem}"
        elif row is not None:
            rows[pair.subject] = row
            summary.reused.append(pair.subject)
        else:
            todo.append(pair)

    bar = tqdm(total=len(todo), desc="prepare-ixi", unit="subject", disable=not progress or not todo)

    def fail(subject: str, reason: str) -> None:
        summary.failed[subject] = reason
        bar.write(f"QC: {subject} left out of the manifest: {reason}")

    for subject, reason in reused_bad.items():
        fail(subject, reason)

    def record(pair: RawPair, status: str, value: dict | str) -> None:
        if status == "ok":
            rows[pair.subject] = value  # type: ignore[assignment]
            summary.prepared.append(pair.subject)
        else:
            fail(pair.subject, value)  # type: ignore[arg-type]
        bar.update(1)

    if workers <= 1 or len(todo) <= 1:
        for pair in todo:
            record(pair, *_run_one(pair, out_dir, settings, pair.subject in qc_subjects))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_run_one, p, out_dir, settings, p.subject in qc_subjects): p for p in todo}
            for future in as_completed(futures):
                try:
                    status, value = future.result()
                except BrokenProcessPool:
                    status, value = "failed", "worker process died (out of memory or a crash)"
                record(futures[future], status, value)
    bar.close()

    splits = assign_splits({s: r["site"] for s, r in rows.items()}, fractions, settings.seed, stratify_site)
    out_rows = []
    for subject, row in rows.items():
        prefix = Path("subjects") / subject
        out_rows.append({**row, **{k: (prefix / row[k]).as_posix() for k in ("t1", "t2", "mask")},
                         "mask_method": mask_method(settings), "split": splits[subject]})
    if out_rows:
        write_manifest(out_dir, out_rows)
        _log_qc(out_rows, log)
    return summary


def _log_qc(rows: list[dict], log: Callable[[str], None]) -> None:
    """One line of registration QC over the run, and the subjects worth a look."""
    def median(key: str) -> float:
        values = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
        return float(np.median(values)) if values else float("nan")

    log(
        f"registration QC (median): NMI {median('nmi_before'):.3f} -> {median('nmi_after'):.3f}, "
        f"edge correlation {median('edge_corr_before'):.3f} -> {median('edge_corr_after'):.3f}"
    )
    worse = [r["subject"] for r in rows if float(r["nmi_after"]) < float(r["nmi_before"]) - 1e-3]
    if worse:
        log(f"check these registrations (NMI went down): {', '.join(sorted(worse))}")
