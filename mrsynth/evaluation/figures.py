"""Report figures (matplotlib, Agg, PNG): orthogonal views, metrics per subject, training curves."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mrsynth.evaluation.views import VIEWS, edge_letters, mask_centre, view_aspect, view_slice  # noqa: E402
from mrsynth.fileio import atomic_path  # noqa: E402

STRIP_BELOW = 10  # fewer subjects per method: every subject as a dot instead of a box plot
AXIS_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE (normalized units)", "psnr_z": "psnr_z (dB)",
               "ssim_z": "ssim_z"}
IMAGE_INCHES = 1.45  # every image column's width (a view taller than wide is drawn narrower, to scale)
BAR_FRACTION = 0.08  # a colour bar column, as a fraction of an image column
BAR_LABEL_ROOM = 0.5  # after a colour bar: room for its ticks and label before the next group
PANEL_SPACE = 0.08  # gaps between panels, as a fraction of the mean column width / row height
# Inches around the panels of a subject figure: the view names (left), the suptitle and the
# column titles (top), the last colour bar's ticks and label (right). Laid out once here, the PNG
# is written without matplotlib's "tight" bounding box, which draws the whole figure twice.
SUBJECT_MARGINS = {"left": 0.3, "right": 0.6, "top": 0.7, "bottom": 0.08}


def _letter_edges(ax: plt.Axes, shape: tuple[int, int], letters: Sequence[str]) -> None:
    height, width = shape
    style = {"color": "#ffd54f", "fontsize": 7, "fontweight": "bold"}
    for (x, y, ha, va), letter in zip(((0.5, height / 2, "left", "center"), (width - 1.5, height / 2, "right", "center"),
                                       (width / 2, 0.5, "center", "top"), (width / 2, height - 1.5, "center", "bottom")),
                                      letters):
        ax.text(x, y, letter, ha=ha, va=va, **style)


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)  # laid out by the caller; "tight" would draw it twice
    plt.close(fig)
    return path


def subject_figure(
    t1: np.ndarray,
    t2: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    mask: np.ndarray,
    title: str,
    convention: str = "neurological",
    units: str = "normalized units",
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
) -> plt.Figure:
    """Rows: axial/coronal/sagittal slices through the mask centre, patient directions on every
    panel. Columns: T1 | real T2, each method's synthesized T2 | each method's |error|, each group
    with its colour bar (T2s and errors share one scale each). Every image panel has the same size.
    Intensities are shown inside the mask (the background black); errors everywhere. Pixels are
    drawn at the voxels' proportions (``voxel_size``, mm per RAS+ axis), so 3 mm slices are not
    squashed."""
    centre = mask_centre(mask)
    inside = mask > 0
    any_inside = bool(inside.any())
    t2_lo, t2_hi = np.percentile(t2[inside], [0.5, 99.5]) if any_inside else (t2.min(), t2.max())
    t1_lo, t1_hi = np.percentile(t1[inside], [0.5, 99.5]) if any_inside else (t1.min(), t1.max())
    err_hi = max((float(np.percentile(np.abs(pred[inside] - t2[inside]), 99)) if any_inside
                  else float(np.abs(pred - t2).max())) for pred in predictions.values()) if predictions else 1.0
    err_hi = err_hi if err_hi > 0 else 1.0

    def shown(volume: np.ndarray, lo: float) -> Callable[[str], np.ndarray]:
        """A view's slice with the background drawn black (after normalization 0 sits mid-grey
        inside the brain's range); only the shown slices are touched, never the whole volume."""
        def image(view: str) -> np.ndarray:
            plane = view_slice(volume, view, centre, convention)
            return np.where(view_slice(inside, view, centre, convention), plane, lo) if any_inside else plane
        return image

    def error(pred: np.ndarray) -> Callable[[str], np.ndarray]:
        """A view's |synthesized - real T2|, taken on the shown slices only."""
        return lambda view: np.abs(view_slice(pred, view, centre, convention)
                                   - view_slice(t2, view, centre, convention))

    groups = [  # (columns of (title, slice of a view), colour map, range, colour bar label)
        ([("T1", shown(t1, t1_lo))], "gray", (t1_lo, t1_hi), f"T1 ({units})"),
        ([("real T2", shown(t2, t2_lo))] + [(name, shown(pred, t2_lo)) for name, pred in predictions.items()],
         "gray", (t2_lo, t2_hi), f"T2 ({units})"),
    ]
    if predictions:
        groups.append(([(f"|error| {name}", error(pred)) for name, pred in predictions.items()], "magma",
                       (0.0, err_hi), f"|synthesized − real T2| ({units})"))
    widths = [w for columns, *_ in groups for w in [1.0] * len(columns) + [BAR_FRACTION, BAR_LABEL_ROOM]][:-1]
    # matplotlib's grid: a unit-ratio column is span * n / ((n + space (n - 1)) * sum(ratios)) wide
    n, m = len(widths), SUBJECT_MARGINS
    grid_width = IMAGE_INCHES * sum(widths) * (n + PANEL_SPACE * (n - 1)) / n
    grid_height = IMAGE_INCHES * (len(VIEWS) + PANEL_SPACE * (len(VIEWS) - 1))
    width, height = m["left"] + grid_width + m["right"], m["top"] + grid_height + m["bottom"]
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(len(VIEWS), n, width_ratios=widths, wspace=PANEL_SPACE, hspace=PANEL_SPACE,
                            left=m["left"] / width, right=1 - m["right"] / width,
                            bottom=m["bottom"] / height, top=1 - m["top"] / height)
    col = 0
    for columns, cmap, (lo, hi), label in groups:
        for name, slice_of in columns:
            for row, view in enumerate(VIEWS):
                ax = fig.add_subplot(grid[row, col])
                image = slice_of(view)
                drawn = ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                                  aspect=view_aspect(view, voxel_size))
                _letter_edges(ax, image.shape, edge_letters(view, convention))
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(name, fontsize=8)
                if col == 0:
                    ax.set_ylabel(view, fontsize=9)
            col += 1
        bar = fig.colorbar(drawn, cax=fig.add_subplot(grid[:, col]))
        bar.set_label(label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
        col += 2
    fig.suptitle(f"{title} ({convention} display: the patient's left on the image's "
                 f"{'left' if convention == 'neurological' else 'right'})", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    return fig


def subject_panel(t1: np.ndarray, t2: np.ndarray, predictions: Mapping[str, np.ndarray], mask: np.ndarray,
                  path: Path, title: str, convention: str = "neurological",
                  voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> Path:
    """:func:`subject_figure` written as a PNG."""
    return _save(subject_figure(t1, t2, predictions, mask, title, convention, voxel_size=voxel_size), path)


def metric_plot(
    values: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str], path: Path
) -> Path:
    """One panel per metric, ``values[method][metric]`` holding the per-subject numbers: every
    subject as a dot with a bar at the mean below ``STRIP_BELOW`` subjects (a box of 2 values
    hides that there are 2), box plots from there on."""
    methods = list(values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0, 0.9 * len(methods) + 1.2) * len(metrics), 3.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [[v for v in values[m][metric] if np.isfinite(v)] for m in methods]
        if max((len(d) for d in data), default=0) < STRIP_BELOW:
            for position, points in enumerate(data, start=1):
                offsets = np.linspace(-0.12, 0.12, len(points)) if len(points) > 1 else np.zeros(len(points))
                ax.scatter(position + offsets, points, s=18, color="#1f77b4", zorder=3)
                if points:
                    ax.hlines(np.mean(points), position - 0.25, position + 0.25, color="#d62728", lw=1.5)
        else:
            ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(0.5, len(methods) + 0.5)
        ax.set_ylabel(AXIS_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    n = max((len([v for v in values[m][k] if np.isfinite(v)]) for m in methods for k in metrics), default=0)
    fig.suptitle(f"{n} subject(s) per method" + (": dots are subjects, bars their mean" if n < STRIP_BELOW else ""),
                 fontsize=9)
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
        ax.set_ylabel("loss" if panel == "loss" else AXIS_LABELS.get(panel, panel))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if panel == "loss":
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def margin_curve(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], path: Path) -> Path:
    """The learning curve, per metric: on top the margin over the better baseline against the
    number of training subjects (log scale), every seed as a dot and the seeds' mean as a line
    (0 = a tie); below, the levels behind it, the model's and the better baseline's, because a
    margin also grows when the baselines fitted on the same few subjects fail."""
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.2 * len(metrics), 6.4), squeeze=False, sharex=True)
    sizes = sorted({int(r["n"]) for r in rows})

    def mean_at(key: str) -> list[float]:
        return [float(np.mean([r[key] for r in rows if r["n"] == n])) for n in sizes]

    for (top, bottom), metric in zip(axes.T, metrics):
        label = AXIS_LABELS.get(metric, metric)
        top.scatter([r["n"] for r in rows], [r[f"{metric}_margin"] for r in rows], s=16, color="#1f77b4",
                    zorder=3, label="one seed")
        top.plot(sizes, mean_at(f"{metric}_margin"), color="#d62728", lw=1.5, label="mean over seeds")
        top.axhline(0.0, color="black", lw=0.8)
        top.set_ylabel(f"{label}: model - better baseline")
        for key, name, colour, marker in ((metric, "model", "#d62728", "o"),
                                          (f"{metric}_baseline_mean", "better baseline", "#7f7f7f", "x")):
            bottom.scatter([r["n"] for r in rows], [r[key] for r in rows], s=16, color=colour, marker=marker,
                           zorder=3)
            bottom.plot(sizes, mean_at(key), color=colour, lw=1.5, label=f"{name} (mean over seeds)")
        bottom.set_ylabel(label)
        bottom.set_xlabel("training subjects")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def subjects_rows(subjects: Sequence[Mapping[str, Any]], path: Path, convention: str = "neurological") -> Path:
    """One row per subject, the axial slice through its mask centre: T1 | synthesized T2 | real
    T2 | |error|. ``subjects``: dicts with ``title``, ``t1``, ``t2``, ``pred``, ``mask`` and
    ``voxel_size``; each row has its own intensity range (T2s share one, as do all the errors)."""
    columns = ("T1", "synthesized T2", "real T2", "|synthesized − real T2|")
    fig, axes = plt.subplots(len(subjects), len(columns), figsize=(2.4 * len(columns), 2.5 * len(subjects) + 0.4),
                             squeeze=False)
    err_hi = max(float(np.percentile(np.abs(s["pred"] - s["t2"])[s["mask"] > 0], 99)) for s in subjects) or 1.0
    for row, subject in zip(axes, subjects):
        inside = subject["mask"] > 0
        centre = mask_centre(subject["mask"])
        ranges = [np.percentile(subject[k][inside], [0.5, 99.5]) for k in ("t1", "t2")]
        panels = [(subject["t1"], "gray", ranges[0]), (subject["pred"], "gray", ranges[1]),
                  (subject["t2"], "gray", ranges[1]), (np.abs(subject["pred"] - subject["t2"]), "magma", (0, err_hi))]
        for ax, name, (volume, cmap, (lo, hi)) in zip(row, columns, panels):
            shown = np.where(inside, volume, lo) if cmap == "gray" else np.where(inside, volume, 0.0)
            image = view_slice(shown, "axial", centre, convention)
            ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                      aspect=view_aspect("axial", subject["voxel_size"]))
            _letter_edges(ax, image.shape, edge_letters("axial", convention))
            ax.set_xticks([])
            ax.set_yticks([])
            if ax is axes[0][list(columns).index(name)]:
                ax.set_title(name, fontsize=9)
        row[0].set_ylabel(subject["title"], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
