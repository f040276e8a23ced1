"""What a mask covers (the brain, the whole head, everything) and whether a T1 is skull-stripped.

A model is trained on T1s normalized inside one kind of mask; ``predict`` must give a new T1 the
same kind without being told. Two voxel counts decide, so no model or atlas is needed:

- an already skull-stripped T1 is zero outside its brain, so its non-zero region is about as
  large as its Otsu foreground (measured: 1.04-1.08 on BraTS and the 3 mm CBICA subjects); a
  T1 with skull has a noisy or zero-filled background around a head, and its non-zero region
  is much larger (2.5x on the raw UPENN exam, 2.6x on the MNI template with skull);
- a brain mask on a T1 with skull covers clearly less than the T1's Otsu (head) foreground
  (0.56-0.65 on the raw exam and the phantom); a head mask covers all of it.
"""
from __future__ import annotations

import numpy as np

from mrsynth.data.preprocess import nonzero_foreground, otsu_foreground

MASK_EXTENTS = ("brain", "head", "all")
# A T1 whose non-zero region is at most this many times its Otsu foreground is skull-stripped.
STRIPPED_NONZERO_RATIO = 1.5
# A mask covering less than this fraction of the T1's Otsu foreground is a brain mask.
BRAIN_OF_HEAD_FRACTION = 0.85
# The training subjects looked at to decide the extent (the first ones, in subject order).
EXTENT_SUBJECTS = 8


def looks_skull_stripped(t1: np.ndarray, head: np.ndarray | None = None) -> bool:
    """Whether a raw T1 (any units) is already skull-stripped: zero outside a brain-sized region.

    ``head``: the T1's Otsu foreground, where the caller has it already.
    """
    head = otsu_foreground(t1) if head is None else head
    return int(nonzero_foreground(t1).sum()) <= STRIPPED_NONZERO_RATIO * max(int(np.count_nonzero(head)), 1)


def mask_extent(t1: np.ndarray, mask: np.ndarray) -> str:
    """``brain`` or ``head``: what ``mask`` covers of the raw T1 it belongs to."""
    head = otsu_foreground(t1)
    if looks_skull_stripped(t1, head):
        return "brain"
    return "brain" if int(np.count_nonzero(mask)) < BRAIN_OF_HEAD_FRACTION * int(np.count_nonzero(head)) else "head"


def training_mask_extent(source: str, subjects: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """The extent of a run's training masks: from the mask source where it says, else by majority
    over ``subjects`` ((raw T1, mask) pairs); ties go to ``brain`` (the stricter mask at predict)."""
    if source == "none":
        return "all"
    if source in ("nonzero", "skull-strip"):
        return "brain"
    votes = [mask_extent(t1, mask) for t1, mask in subjects]
    return "head" if votes and votes.count("head") > len(votes) / 2 else "brain"
