"""Portable weights both ways: bit-exact round trips, and broken files that fail naming the culprit."""
from __future__ import annotations

import pytest

from parity_tests import checks
from parity_tests.checks import mismatch
from parity_tests.test_forward_gradients import COVERING, assert_rows, model_config


@pytest.mark.parametrize("direction", checks.DIRECTIONS)
@pytest.mark.parametrize("name", sorted(COVERING))
def test_round_trip_through_the_other_framework_is_bit_exact(name, direction, tmp_path):
    pair = checks.transfer_pair(model_config(name), direction, tmp_path)
    assert_rows([checks.round_trip_check(pair, tmp_path)])


@pytest.mark.parametrize("name", ["2d-batch-resize-conv-residual-leaky-dropout", "3d-batch-transpose-maxpool-relu-deep"])
@pytest.mark.parametrize("direction", checks.DIRECTIONS)
def test_broken_weight_files_fail_in_both_backends_naming_the_parameter(name, direction, tmp_path):
    pair = checks.transfer_pair(model_config(name), direction, tmp_path)
    rows = checks.mismatch_checks(pair.weight_file, tmp_path / "broken")
    cases = {r.case for r in rows}
    assert cases == {f"{b}: {c}" for b in ("jax", "torch")
                     for c in ("missing key", "extra key", "wrong shape", "wrong config", "wrong format version")}
    assert_rows(rows)


def test_mismatch_check_fails_when_a_broken_file_loads(tmp_path, monkeypatch):
    """The check can fail: a 'broken' file that in fact loads is reported, in both backends."""
    pair = checks.transfer_pair(model_config("2d-group-transpose-maxpool-relu-deep"), "torch->jax", tmp_path)
    monkeypatch.setattr(mismatch, "mismatch_variants", lambda valid, work: [("not broken", valid, "'x'")])
    rows = mismatch.mismatch_checks(pair.weight_file, tmp_path)
    assert [r.passed for r in rows] == [False, False]
    assert all(r.note == "loaded without error" for r in rows)
