"""What a mask covers and whether a T1 is skull-stripped, from voxel counts alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mrsynth.config import DataConfig
from mrsynth.data.contract import training_mask_source
from mrsynth.data.discovery import SubjectFiles
from mrsynth.data.extent import looks_skull_stripped, mask_extent, training_mask_extent


def head_phantom(background: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 with scalp, skull and brain on a noisy or zero background, its brain, its head)."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, 48)] * 3, indexing="ij"))
    r = np.sqrt((g**2).sum(axis=0))
    head, brain = r < 0.9, r < 0.7
    t1 = np.where(brain, 100.0, np.where(r < 0.8, 10.0, np.where(head, 80.0, 0.0)))
    t1 = t1 + background * np.random.default_rng(0).random(t1.shape)
    return t1.astype(np.float32), brain, head


def test_skull_stripped_or_not():
    t1, brain, _ = head_phantom(background=5.0)
    assert not looks_skull_stripped(t1)  # a head on scanner noise
    assert looks_skull_stripped(np.where(brain, t1, 0.0))  # zero outside the brain


def test_mask_extent_of_brain_and_head_masks():
    t1, brain, head = head_phantom(background=5.0)
    assert mask_extent(t1, brain) == "brain"
    assert mask_extent(t1, head) == "head"
    assert mask_extent(np.where(brain, t1, 0.0), brain) == "brain"  # a skull-stripped T1's own mask
    assert training_mask_extent("otsu", [(t1, head), (t1, head), (t1, brain)]) == "head"
    assert training_mask_extent("given", [(t1, head), (t1, brain)]) == "brain"  # a tie: the stricter
    assert training_mask_extent("nonzero", []) == "brain" and training_mask_extent("none", []) == "all"


def test_prepare_ixi_masks_count_as_the_method_that_made_them():
    def files(method):
        return [SubjectFiles(s, Path(f"{s}-T1.nii.gz"), Path(f"{s}-T2.nii.gz"), Path(f"{s}-mask.nii.gz"),
                             mask_method=method) for s in ("A", "B")]

    cfg = DataConfig(mask="given_or_otsu")
    assert training_mask_source(cfg, files("otsu")) == "otsu"
    assert training_mask_source(cfg, files("skull-strip")) == "skull-strip"
    assert training_mask_source(cfg, files(None)) == "given"
    assert training_mask_source(cfg, files("otsu")[:1] + files(None)[1:]) == "given"  # mixed: unknown
    no_masks = [SubjectFiles("A", Path("A-T1.nii.gz"), Path("A-T2.nii.gz"))]
    assert training_mask_source(cfg, no_masks) == "otsu"
    assert training_mask_source(DataConfig(mask="nonzero"), files("otsu")) == "nonzero"
