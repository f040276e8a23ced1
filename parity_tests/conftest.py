"""Fixtures of the parity suite."""
from __future__ import annotations

import pytest

from mrsynth.data.preprocess import Volume

from parity_tests.tiny_data import phantom_volume


@pytest.fixture(scope="session")
def phantom_volumes() -> list[Volume]:
    """Two tiny phantom subjects (32^3), shared by the training and synthesis tests."""
    return [phantom_volume(seed) for seed in range(2)]
