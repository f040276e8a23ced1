"""Report figures read the way radiologists and imaging engineers read them: patient directions on
every panel, a left-right convention to choose, colour bars with units, equal panels, dots for few
subjects, dB on PSNR axes, methods named by model."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from mrsynth.evaluation import figures, views
from mrsynth.evaluation.baselines import BASELINES
from mrsynth.evaluation.runner import RunSpec, run_title

CENTRE = (20, 30, 15)


@pytest.fixture
def head() -> tuple[np.ndarray, np.ndarray]:
    """A RAS+ volume with a bright block at the patient's right, anterior, upper side."""
    volume = np.zeros((40, 60, 30), np.float32)
    mask = np.zeros_like(volume)
    mask[5:35, 5:55, 5:25] = 1
    volume[mask > 0] = 1.0
    volume[28:34, 45:54, 17:22] = 3.0
    return volume, mask


@pytest.fixture
def captured(monkeypatch) -> list[plt.Figure]:
    """The figures the module would save (kept open for inspection)."""
    kept: list[plt.Figure] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: kept.append(fig) or path)
    yield kept
    for fig in kept:
        plt.close(fig)


def _bright_side(image: np.ndarray) -> tuple[str, str]:
    rows, cols = np.argwhere(image == image.max()).mean(axis=0)
    return ("left" if cols < image.shape[1] / 2 else "right"), ("top" if rows < image.shape[0] / 2 else "bottom")


def test_views_and_letters_follow_the_patient_in_both_conventions(head):
    volume, _ = head
    expected = {  # where the right-anterior-superior block shows, and the letter at that edge
        ("axial", "neurological"): ("right", "top"), ("axial", "radiological"): ("left", "top"),
        ("coronal", "neurological"): ("right", "top"), ("coronal", "radiological"): ("left", "top"),
        ("sagittal", "neurological"): ("right", "top"), ("sagittal", "radiological"): ("right", "top"),
    }
    for (view, convention), (side, vertical) in expected.items():
        image = views.view_slice(volume, view, (31, 49, 19), convention)
        assert _bright_side(image) == (side, vertical), (view, convention)
        left, right, top, _ = views.edge_letters(view, convention)
        assert (right if side == "right" else left) == {"axial": "R", "coronal": "R", "sagittal": "A"}[view]
        assert top == {"axial": "A", "coronal": "S", "sagittal": "S"}[view]
    with pytest.raises(ValueError, match="convention"):
        views.view_slice(volume, "axial", CENTRE, "upside-down")


@pytest.mark.parametrize("convention", views.CONVENTIONS)
def test_subject_figure_panels_are_equal_lettered_and_have_unit_colour_bars(head, captured, convention):
    volume, mask = head
    predictions = {"U-Net (JAX)": 0.9 * volume, "linear regression": volume + 0.2}
    figures.subject_panel(volume, volume, predictions, mask, Path("unused.png"), "S1", convention)
    fig = captured[0]
    fig.canvas.draw()  # applies the images' aspect, which sets the drawn panel sizes read below
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 * (2 + 2 * len(predictions))  # T1, real T2, predictions, errors x 3 views
    rows: dict[float, set[tuple[float, float]]] = {}
    for ax in panels:  # drawn sizes (after the equal aspect) per row of views
        box = ax.get_position()
        rows.setdefault(round(box.y0 + box.height / 2, 3), set()).add((round(box.width, 6), round(box.height, 6)))
    assert len(rows) == 3 and all(len(sizes) == 1 for sizes in rows.values()), rows  # errors as large as images
    for ax in panels:
        letters = {t.get_text() for t in ax.texts}
        assert len(letters) == 4 and letters <= set("LRAPSI"), letters
    first_axial = panels[0]
    left_letter = min(first_axial.texts, key=lambda t: t.get_position()[0]).get_text()
    assert left_letter == ("L" if convention == "neurological" else "R")
    labels = [ax.get_ylabel() for ax in bars]
    assert labels == ["T1 (normalized units)", "T2 (normalized units)",
                      "|synthesized − real T2| (normalized units)"]
    assert [ax.images[0].get_cmap().name for ax in panels[:3]] == ["gray"] * 3
    assert convention in fig._suptitle.get_text()


@pytest.mark.parametrize("methods", [1, 4])
def test_subject_figure_fits_its_page_and_panels_have_the_set_width(head, captured, methods):
    """The PNG is written without a "tight" bounding box (it would draw the figure twice), so the
    layout itself must keep every label, title and colour bar inside the page, with little
    margin left over, and give each image column IMAGE_INCHES."""
    volume, mask = head
    big = np.zeros((240, 240, 155), np.float32)
    big_mask = np.zeros_like(big)
    big_mask[20:220, 20:220, 10:145] = 1
    big[big_mask > 0] = 1234.5  # long tick labels on the colour bars
    predictions = {f"a long method name {i}": big for i in range(methods)}
    figures.subject_panel(big, big, predictions, big_mask, Path("unused.png"), "Brats18_2013_11_1: T1, real T2")
    fig = captured[0]
    drawn, inches = fig.get_tightbbox(fig.canvas.get_renderer()), fig.bbox_inches  # both in inches
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01, drawn
    assert drawn.x1 <= inches.x1 + 0.01 and drawn.y1 <= inches.y1 + 0.01, (drawn, inches)
    assert drawn.width >= inches.width - 0.4 and drawn.height >= inches.height - 0.4, (drawn, inches)
    widths = {round(ax.get_position().width * inches.width, 3) for ax in fig.axes if ax.images}
    assert widths == {figures.IMAGE_INCHES}, widths


@pytest.mark.parametrize("n, strip", [(2, True), (9, True), (10, False)])
def test_metric_plot_shows_subjects_as_dots_when_few_and_psnr_in_db(captured, n, strip):
    rng = np.random.default_rng(0)
    values = {m: {k: list(rng.normal(size=n)) for k in ("psnr", "ssim", "mae")} for m in ("U-Net (JAX)", "linear")}
    figures.metric_plot(values, ("psnr", "ssim", "mae"), Path("unused.png"))
    axes = captured[0].axes
    assert [ax.get_ylabel() for ax in axes] == ["PSNR (dB)", "SSIM", "MAE (normalized units)"]
    dots = [c for c in axes[0].collections if c.get_offsets().shape[0] == n]
    assert (len(dots) == 2) is strip  # one set of dots per method, or none under box plots
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["U-Net (JAX)", "linear"]


def test_training_curves_label_psnr_in_db(captured):
    logs = {"U-Net (JAX)": [{"kind": "train", "step": 1, "loss": 1.0}, {"kind": "val", "step": 1, "psnr": 20.0}]}
    figures.training_curves(logs, Path("unused.png"))
    assert "PSNR (dB)" in [ax.get_ylabel() for ax in captured[0].axes]


def test_methods_are_named_by_model(tmp_path):
    def spec(backend: str, label: str) -> RunSpec:
        return RunSpec(tmp_path / "demo-run", None, {"backend": backend}, "best", label=label)

    assert run_title(spec("jax", "jax")) == "U-Net (JAX)"
    assert run_title(spec("torch", "torch")) == "U-Net (PyTorch)"
    assert run_title(spec("jax", "jax:demo-run")) == "U-Net (JAX, demo-run)"
    assert [BASELINES[name].title for name in BASELINES] == ["identity (T1)", "linear regression",
                                                             "histogram matching"]


def test_thick_slices_are_drawn_at_their_proportions():
    """3 mm slices (RAS+ axis 2) stretch the coronal and sagittal views three times upwards."""
    assert views.view_aspect("axial", (0.94, 0.94, 3.0)) == pytest.approx(1.0)
    assert views.view_aspect("coronal", (0.94, 0.94, 3.0)) == pytest.approx(3.0 / 0.94)
    assert views.view_aspect("sagittal", (1.0, 2.0, 3.0)) == pytest.approx(1.5)
