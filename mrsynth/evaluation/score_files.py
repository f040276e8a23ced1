"""Score a written prediction file against the real T2 exactly as ``evaluate`` scores a subject.

``evaluate`` compares in normalized units: the real T2 normalized with its own statistics inside
the subject's mask, the prediction as the network produced it. A ``predict`` output is in the
training set's T2 units (``normalized * scale + offset`` of the run's T2 reference), so mapping
it back through that reference puts both on the same footing. The gap between this score and
``evaluate``'s for the same subject is what the user's path loses (mask, normalization,
clipping), which is exactly what a test of the T1-only path must measure.
"""
from __future__ import annotations

from pathlib import Path

from mrsynth.config import DataConfig
from mrsynth.data.io import read_nifti
from mrsynth.data.normalization import NormStats, fit_normalization
from mrsynth.data.preprocess import resample_to
from mrsynth.evaluation.metrics import volume_metrics


def score_prediction(pred_path: Path, t2_path: Path, mask_path: Path, t2_reference: NormStats,
                     data_cfg: DataConfig, data_range: float | None = None,
                     synthesized_in: Path | None = None) -> dict[str, float]:
    """Masked metrics of a predict output against the real T2, inside the given mask.

    ``synthesized_in``: the mask predict wrote beside its output (``<input>_synthT2_mask``);
    scores only inside both masks then: the quality of what was synthesized, apart from the
    brain voxels a different mask (``--skull-strip``) leaves out, whose share of the given mask
    ``brain_coverage`` reports. Not the output's non-zero voxels: a synthesized voxel can be 0.
    """
    pred_raw, pred_geometry = read_nifti(pred_path, what="prediction")
    t2_raw, t2_geometry = read_nifti(t2_path, what="T2")
    mask_raw, mask_geometry = read_nifti(mask_path, what="mask")
    t2 = resample_to(t2_raw, t2_geometry, pred_geometry, order=1)
    mask = resample_to(mask_raw, mask_geometry, pred_geometry, order=0) > 0.5
    t2_norm = fit_normalization(t2, mask, data_cfg, t2_path, "t2").normalize(t2)
    coverage = {}
    if synthesized_in is not None:
        synthesized = read_nifti(synthesized_in, what="predict's mask")[0] > 0
        coverage["brain_coverage"] = float((mask & synthesized).sum() / max(1, int(mask.sum())))
        mask = mask & synthesized
    pred_norm = t2_reference.normalize(pred_raw)
    pred_norm[~mask] = 0.0
    t2_norm[~mask] = 0.0
    scores = volume_metrics(pred_norm, t2_norm, mask, data_range)
    scores.update(coverage)
    scores["max_output"] = float(pred_raw.max())
    scores["min_output"] = float(pred_raw.min())
    return scores
