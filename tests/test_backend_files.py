"""The two backends read the same: the same module file names in jax_impl/ and torch_ref/."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_jax_impl_and_torch_ref_list_the_same_modules():
    jax_files, torch_files = ({p.name for p in (ROOT / d).glob("*.py")} for d in ("jax_impl", "torch_ref"))
    assert jax_files - torch_files == set() and torch_files - jax_files == set()
    assert {"train.py", "train_state.py", "weights.py", "predict.py"} <= jax_files
