"""Sphinx configuration of the mrsynth documentation (MyST Markdown pages).

Build: ``pip install -e ".[docs]"`` then
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
The CLI reference is generated from ``mrsynth.cli.build_parser`` (sphinx-argparse), the
configuration reference from the config dataclasses' ``#:`` comments (``_ext/config_reference_ext.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # mrsynth from the checkout, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import mrsynth  # noqa: E402

project = "mrsynth"
author = "the mrsynth authors"
copyright = "the mrsynth authors, Apache-2.0"
release = version = mrsynth.__version__

extensions = [
    "myst_parser",
    "sphinxarg.ext",
    "config_reference_ext",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
# results/ and benchmarks/ hold measured reports (Markdown, JSON, CSV, figures) that the pages
# name by path; they are not pages of the site. _generated/ holds pages' includes.
exclude_patterns = ["_build", "_generated", "results", "benchmarks", "Thumbs.db", ".DS_Store"]

# Help texts and pages hold literal options (--set): no "smart" dashes or quotes.
smartquotes = False
myst_heading_anchors = 3  # [text](#a-heading) links within a page, as on GitHub
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"mrsynth {release}"
html_theme_options = {"description": "T1w -> T2w brain MR synthesis, JAX/Flax and PyTorch", "fixed_sidebar": True}
