"""The training losses (``train.loss``) by name: the one list both backends register, and which
batch arrays a step reads.

Each backend's ``losses.py`` holds a registry of name -> function ``(pred, batch, train) ->
(loss, terms)`` (see there); a test checks that both register exactly these names, and config
validation reads them from here, without importing a framework. Definitions: docs/ARCHITECTURE.md.

A step reads ``t1`` and ``t2``; the ``mask`` goes to the device only when the loss (or the
objective) is marked with :func:`uses_mask`, so a run that never reads it does not pay its
host-to-device transfer.
"""
from __future__ import annotations

from typing import Any, TypeVar

LOSS_NAMES = ("l1", "l1_ssim", "l1_masked")
STEP_KEYS = ("t1", "t2")  # what every training step reads
MASK_KEY = "mask"

Marked = TypeVar("Marked")


def uses_mask(loss: Marked) -> Marked:
    """Mark a loss function that reads ``batch["mask"]`` (register it marked in both backends)."""
    loss.uses_mask = True  # type: ignore[attr-defined]
    return loss


def step_batch_keys(*readers: Any) -> tuple[str, ...]:
    """The batch arrays a step places on the device: ``t1``, ``t2``, and ``mask`` when any of
    ``readers`` (the loss, the objective) has ``uses_mask`` set."""
    return STEP_KEYS + ((MASK_KEY,) if any(getattr(r, "uses_mask", False) for r in readers) else ())
