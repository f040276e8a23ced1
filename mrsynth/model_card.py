"""A compact model card for every exported weight file: ``<name>.md`` beside it and the same text
in its metadata (``model_card``), so the facts travel with the weights: what the model is for,
what it was trained on, how its inputs must be prepared, how well it did, where it must not be
used, and that what it writes is synthetic.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mrsynth
from mrsynth.fileio import atomic_write_text

CARD_KEY = "model_card"
CARD_METRICS = ("psnr", "ssim", "mae")
_METRIC_UNITS = {"psnr": " dB", "ssim": "", "mae": " (normalized T2 units)"}
_AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


def _fmt(value: Any) -> str:
    return f"{float(value):.4g}"


def _test_lines(test: dict[str, Any] | None, run: str) -> list[str]:
    """The test metrics as card lines (mean [95% CI]), or how to get them."""
    if test is None:
        return [f"not evaluated on the test split yet: `mrsynth evaluate --checkpoint {run}`, then export again."]
    metrics, n = test["metrics"], test["n"]
    lines = [f"{n} {test['split']} subject(s), inside the brain mask, mean [95% CI, "
             f"{metrics[CARD_METRICS[0]].get('ci_method') or 'none'}]:"]
    lines += [f"  - {m}: {_fmt(metrics[m]['mean'])}{_METRIC_UNITS[m]}"
              f" [{_fmt(metrics[m]['ci_low'])}, {_fmt(metrics[m]['ci_high'])}]" for m in CARD_METRICS if m in metrics]
    if n < 5:
        lines.append(f"  - only {n} subject(s): these numbers say little about new data")
    return lines


def model_card(metadata: dict[str, Any], test: dict[str, Any] | None = None) -> str:
    """The card of a weight file exported from a run. ``metadata``: the run's facts as
    :func:`mrsynth.runs.portable_metadata` gathers them; ``test``: :func:`read_test_metrics`."""
    cfg, prep, summary = metadata["config"], metadata["preprocessing"], metadata.get("summary") or {}
    model, data = cfg["model"], cfg["data"]
    subjects = prep.get("subjects", {})
    channels = [model["base_channels"] * m for m in model["channel_mults"]]
    context = data.get("context_slices", 0)
    along = ("each of the three axes" if prep.get("planes") == "all"
             else f"the {_AXIS_NAMES.get(prep['slice_axis'], prep['slice_axis'])} axis")
    slices = (f"2D slices along {along} of the RAS+ "
              f"volume" + (f", each with {context} neighbouring slice(s) on either side as input channels"
                           if context else "")) if model["dims"] == 2 else "3D patches"
    phantom = data["source"] == "phantom"
    val = summary.get("last_val") or {}
    test_lines = _test_lines(test, metadata.get("run", "RUN"))
    lines = [
        f"# Model card: {metadata.get('run', 'mrsynth model')}",
        "",
        "**Synthetic.** Every image this model writes is a synthesized T2w, not an acquired scan: "
        "not for diagnosis or any clinical decision.",
        "",
        f"- **Model**: {model['dims']}D U-Net, depth {model['depth']}, channels "
        f"{'-'.join(map(str, channels))}, {model['norm']} norm, {model['activation']}; "
        f"{model['in_channels']} input channel(s), 1 output. Trained with {metadata.get('framework', '?')}, "
        f"mrsynth {mrsynth.__version__}, checkpoint {metadata.get('checkpoint', '?')}"
        + (f" (step {metadata['step']})" if metadata.get("step") is not None else "") + ".",
        "- **Intended use**: research; a T2w volume for a T1w-only brain MR subject, on the T1's grid "
        "(`mrsynth predict`), e.g. for a pipeline that needs both contrasts.",
        f"- **Training data**: source `{data['source']}`, {len(subjects.get('train', []))} training / "
        f"{len(subjects.get('val', []))} validation / {len(subjects.get('test', []))} test subjects, split by "
        f"subject (ids in the metadata's `preprocessing`)."
        + (" A simulated phantom, not real scans." if phantom else ""),
        f"- **Preprocessing** (the inputs must match it): brain mask `{prep['mask']}`, normalization "
        f"`{prep['normalization']}` inside the mask, {slices}. Output: normalized T2 clipped to "
        f"[{_fmt(prep['t2_range'][0])}, {_fmt(prep['t2_range'][1])}], zero outside the mask, mapped to T2 units "
        f"as x * {_fmt(prep['t2_reference']['scale'])} + {_fmt(prep['t2_reference']['offset'])}.",
        "- **Test metrics**: " + test_lines[0],
        *test_lines[1:],
        "- **Validation at the end of training**: "
        + (", ".join(f"{m} {_fmt(val[m])}" for m in CARD_METRICS if m in val) or "none") + ".",
        "- **Limits**: trained on the subjects above only; not tested on other scanners, field strengths, "
        "ages or pathology (lesions may be erased or invented); a brain mask made differently from the "
        "training masks shifts the normalization and the result; intensities beyond the training T2 "
        "range are clipped."
        + (" Trained on a phantom: use it to try the pipeline, not on real data." if phantom else ""),
        "",
    ]
    return "\n".join(lines)


def card_of(metadata: dict[str, str]) -> str | None:
    """The card text stored in a weight file's string metadata, if it has one."""
    text = metadata.get(CARD_KEY)
    return text if isinstance(text, str) and text else None


def write_card_beside(weights: Path, card: str) -> Path:
    """``<weights stem>.md`` next to the weight file (atomic); returns its path."""
    path = Path(weights).with_suffix(".md")
    atomic_write_text(path, card)
    return path


def read_test_metrics(run_dir: Path, which: str) -> dict[str, Any] | None:
    """This checkpoint's metrics in the run's test-split evaluate report (``RUN/eval_test``, where
    ``evaluate`` writes it): {"metrics", "n", "split"}; None when there is no such report."""
    try:
        report = json.loads((Path(run_dir) / "eval_test" / "summary.json").read_text())
        entry = next(r for r in report["runs"]
                     if Path(r["run_dir"]).name == Path(run_dir).name and r["checkpoint"] == which)
        return {"metrics": report["methods"][entry["label"]]["metrics"], "n": len(report["subjects"]),
                "split": report["split"]}
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
