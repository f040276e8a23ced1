"""The real-data path on the MNI ICBM152 2009c T1w/T2w pair (../shared/data/mni2009c_2mm).

Skipped when that folder is absent (a fresh clone by a user); CI has it beside the clone.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrsynth.cli import main
from mrsynth.config import DataConfig
from mrsynth.data.discovery import SubjectFiles, discover_pairs
from mrsynth.data.preprocess import load_volume
from tests.slabs import write_slab_subjects
from mrsynth.data.splits import split_subjects

MNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "mni2009c_2mm"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (MNI / "mni2009c_2mm_T1w.nii.gz").is_file(), reason=f"{MNI} not present"),
]


def mni_files() -> SubjectFiles:
    return SubjectFiles("mni", MNI / "mni2009c_2mm_T1w.nii.gz", MNI / "mni2009c_2mm_T2w.nii.gz",
                        mask=MNI / "mni2009c_2mm_brain_mask.nii.gz")


def test_real_pair_loads_normalizes_and_shows_inverted_contrast(tmp_path):
    vol = load_volume(mni_files(), DataConfig(mask="given", cache_dir=str(tmp_path / "cache")))
    assert vol.t1.shape == vol.t2.shape == (97, 115, 97)
    inside = vol.mask > 0
    assert 0.15 < inside.mean() < 0.3  # the brain mask, not the head
    for x in (vol.t1, vol.t2):
        assert abs(float(x[inside].mean())) < 1e-3 and abs(float(x[inside].std()) - 1) < 1e-3
    # T1w and T2w contrasts are inverted in the brain (CSF dark vs bright): negative correlation.
    assert np.corrcoef(vol.t1[inside], vol.t2[inside])[0, 1] < -0.3
    # The second load comes from the cache and is identical.
    again = load_volume(mni_files(), DataConfig(mask="given", cache_dir=str(tmp_path / "cache")))
    np.testing.assert_array_equal(again.t2, vol.t2)


def test_slabs_keep_world_coordinates_and_split_from_manifest(tmp_path):
    manifest = write_slab_subjects(*(getattr(mni_files(), r) for r in ("t1", "t2", "mask")), tmp_path, slab=8)
    cfg = DataConfig(source="manifest", manifest=str(manifest), mask="given")
    pairs = discover_pairs(cfg)
    splits = split_subjects(pairs, cfg)
    assert len(pairs) == 9  # 12 slabs of 8 slices, 3 without brain left out
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 2, 1]
    slab3 = nib.load(str(tmp_path / "slab03-T1.nii.gz"))
    whole = nib.load(str(MNI / "mni2009c_2mm_T1w.nii.gz"))
    # slab 3 is the 4th kept slab (the first, slices 0-7, has no brain): slices 32-39, in world coordinates too
    np.testing.assert_allclose(slab3.affine @ [0, 0, 0, 1], whole.affine @ [0, 0, 32, 1])
    np.testing.assert_allclose(np.asarray(slab3.dataobj), np.asarray(whole.dataobj)[:, :, 32:40], atol=1e-6)


@pytest.mark.slow
def test_training_on_some_slabs_beats_identity_on_held_out_slabs(tmp_path):
    manifest = write_slab_subjects(*(getattr(mni_files(), r) for r in ("t1", "t2", "mask")), tmp_path / "slabs")
    overrides = [
        "data.source=manifest", f"data.manifest={manifest}", "data.mask=given",
        f"data.cache_dir={tmp_path / 'cache'}", "data.patch_size=[96,112]", "data.min_foreground=0.05",
        "model.depth=2", "model.base_channels=8", "model.channel_mults=[1,2,4]",
        "train.steps=40", "train.batch_size=8", "train.warmup_steps=5", "train.lr=3e-3",
        "train.log_every=10", "train.val_every=40", "train.ckpt_every=40", f"run.root={tmp_path / 'runs'}",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["train", "--backend", "torch", "--run-dir", str(tmp_path / "run"), *sets]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    mae = {method: v["metrics"]["mae"]["mean"] for method, v in summary["methods"].items()}
    assert np.isfinite(mae["torch"]) and mae["torch"] < mae["identity"]
    written = sorted((tmp_path / "eval" / "nifti").glob("slab*"))
    assert written and nib.load(str(written[0])).shape == (97, 115, 8)
