"""The configured dataset as subject files: one entry point for training, evaluation and benchmarks.

The built-in phantom is generated on first use, so every command works on a fresh checkout. This
sits above both ``mrsynth.data`` (discovery, splits) and ``mrsynth.phantom`` (which writes its
volumes with ``mrsynth.data.io``), so neither package imports the other in a circle.
"""
from __future__ import annotations

from mrsynth.config import DataConfig
from mrsynth.data.discovery import SubjectFiles, discover_pairs
from mrsynth.data.splits import split_subjects

SUBJECT_CHOICES = ("test", "val", "train", "all")  # the splits evaluate and compare can score


def available_pairs(cfg: DataConfig) -> list[SubjectFiles]:
    """All paired subjects of the configured source (the phantom is generated if needed)."""
    if cfg.source == "phantom":
        from mrsynth.phantom.dataset import ensure_phantom

        ensure_phantom(cfg)
    return discover_pairs(cfg)


def subject_splits(cfg: DataConfig) -> dict[str, list[SubjectFiles]]:
    """``{"train", "val", "test"}`` subject files, split exactly as training splits them."""
    return split_subjects(available_pairs(cfg), cfg)
