"""Report figures (matplotlib, Agg, PNG): orthogonal views, metric box plots, training curves."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mrsynth.fileio import atomic_path  # noqa: E402

VIEWS = ("axial", "coronal", "sagittal")  # RAS+: axial = fixed z, coronal = fixed y, sagittal = fixed x
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}


def mask_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the mask's centre of mass (the volume centre for an empty mask)."""
    idx = np.argwhere(mask > 0)
    if idx.size == 0:
        return tuple(int(s // 2) for s in mask.shape)  # type: ignore[return-value]
    return tuple(int(round(c)) for c in idx.mean(axis=0))  # type: ignore[return-value]


def view_slice(volume: np.ndarray, view: str, centre: Sequence[int]) -> np.ndarray:
    """A 2D slice for display: rows run anterior/superior upwards as radiologists look at it."""
    axis = _VIEW_AXIS[view]
    image = np.take(volume, centre[axis], axis=axis)
    return np.rot90(image)  # RAS+ (i, j) -> image with the second axis pointing up


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def subject_panel(
    t1: np.ndarray,
    t2: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    mask: np.ndarray,
    path: Path,
    title: str,
) -> Path:
    """Rows: axial/coronal/sagittal mid-slices through the mask centre. Columns: T1, real T2,
    each method's synthesized T2, then each method's |error| map on one shared colour scale.
    Intensities are shown inside the mask (the background black); errors everywhere."""
    centre = mask_centre(mask)
    inside = mask > 0
    t2_lo, t2_hi = np.percentile(t2[inside], [0.5, 99.5]) if inside.any() else (t2.min(), t2.max())
    t1_lo, t1_hi = np.percentile(t1[inside], [0.5, 99.5]) if inside.any() else (t1.min(), t1.max())
    errors = {name: np.abs(pred - t2) for name, pred in predictions.items()}
    err_hi = max((float(np.percentile(e[inside], 99)) if inside.any() else float(e.max()))
                 for e in errors.values()) if errors else 1.0
    err_hi = err_hi if err_hi > 0 else 1.0
    def shown(volume: np.ndarray, lo: float) -> np.ndarray:
        """Background drawn black: after normalization 0 sits mid-grey inside the brain's range."""
        return np.where(inside, volume, lo) if inside.any() else volume

    columns = [("T1", shown(t1, t1_lo), "gray", (t1_lo, t1_hi)), ("real T2", shown(t2, t2_lo), "gray", (t2_lo, t2_hi))]
    columns += [(name, shown(pred, t2_lo), "gray", (t2_lo, t2_hi)) for name, pred in predictions.items()]
    columns += [(f"|error| {name}", err, "magma", (0.0, err_hi)) for name, err in errors.items()]
    fig, axes = plt.subplots(len(VIEWS), len(columns), figsize=(1.9 * len(columns) + 0.8, 2.0 * len(VIEWS) + 0.5),
                             squeeze=False)
    err_image = None
    for row, view in enumerate(VIEWS):
        for col, (label, volume, cmap, (lo, hi)) in enumerate(columns):
            ax = axes[row, col]
            image = ax.imshow(view_slice(volume, view, centre), cmap=cmap, vmin=lo, vmax=hi,
                              interpolation="nearest")
            if cmap == "magma":
                err_image = image
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=8)
            if col == 0:
                ax.set_ylabel(view, fontsize=9)
    fig.suptitle(title, fontsize=10)
    if err_image is not None:
        fig.colorbar(err_image, ax=axes[:, len(columns) - len(errors):].ravel().tolist(), shrink=0.8,
                     label="|synthesized - real| (normalized T2 units)")
    return _save(fig, path)


def metric_boxplots(
    values: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str], path: Path
) -> Path:
    """One box plot per metric; ``values[method][metric]`` holds the per-subject numbers."""
    methods = list(values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0, 0.9 * len(methods) + 1.2) * len(metrics), 3.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [[v for v in values[m][metric] if np.isfinite(v)] for m in methods]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def read_metrics_log(path: Path) -> list[dict]:
    """Records of a run's metrics.jsonl (a missing file gives none; a torn last line is skipped)."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def training_curves(logs: Mapping[str, Sequence[dict]], path: Path,
                    val_metrics: Sequence[str] = ("mae", "psnr", "ssim")) -> Path:
    """Training loss and validation metrics against the step, every run in the same axes."""
    panels = ["loss", *val_metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for label, records in logs.items():
        train = [r for r in records if r.get("kind") == "train" and "loss" in r]
        val = [r for r in records if r.get("kind") == "val"]
        for ax, panel in zip(axes[0], panels):
            rows = train if panel == "loss" else [r for r in val if panel in r]
            if rows:
                ax.plot([r["step"] for r in rows], [r[panel] for r in rows],
                        marker="" if panel == "loss" else "o", ms=3, label=label)
    for ax, panel in zip(axes[0], panels):
        ax.set_title("training loss" if panel == "loss" else f"validation {panel}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if panel == "loss":
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
