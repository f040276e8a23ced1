"""The training losses (``train.loss``) by name: the one list both backends register.

Each backend's ``losses.py`` holds a registry of name -> function ``(pred, batch, train) ->
(loss, terms)`` (see there); a test checks that both register exactly these names, and config
validation reads them from here, without importing a framework. Definitions: docs/ARCHITECTURE.md.
"""
from __future__ import annotations

LOSS_NAMES = ("l1", "l1_ssim")
