"""Tolerance tables of the parity checks: defaults that never change, overrides as new tables."""
from __future__ import annotations

import pytest

from mrsynth.errors import ConfigError
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES, ToleranceTable


def test_lookup_by_check_and_precision():
    assert DEFAULT_TOLERANCES["forward", "float32"] == 1e-5
    assert DEFAULT_TOLERANCES["synth_psnr", "float32"] == 60.0
    with pytest.raises(KeyError, match="no tolerance for check 'adamw_update' at precision 'bfloat16'"):
        DEFAULT_TOLERANCES["adamw_update", "bfloat16"]


def test_overrides_make_a_new_table_and_leave_the_defaults_alone():
    table = DEFAULT_TOLERANCES.with_overrides(["forward.float64=0", "grad=0.5", "grad.float32=1e-3"])
    assert table["forward", "float64"] == 0.0 and table["forward", "float32"] == 1e-5
    assert table["grad", "float32"] == 1e-3  # applied in order: the later, narrower one wins
    assert all(table["grad", p] == 0.5 for p in ("float64", "tf32", "bfloat16"))
    assert DEFAULT_TOLERANCES["forward", "float64"] == 1e-12 and DEFAULT_TOLERANCES["grad", "float32"] == 1e-4
    assert table.changed_from(DEFAULT_TOLERANCES) == {
        "forward": {"float32": 1e-5, "float64": 0.0, "tf32": 1e-2, "bfloat16": 5e-2},
        "grad": {"float32": 1e-3, "float64": 0.5, "tf32": 0.5, "bfloat16": 0.5},
    }
    assert DEFAULT_TOLERANCES.with_overrides([]).changed_from(DEFAULT_TOLERANCES) == {}
    assert DEFAULT_TOLERANCES.with_overrides(["lr=1e-5"]).changed_from(DEFAULT_TOLERANCES) == {}


def test_tables_cannot_be_changed_in_place():
    with pytest.raises(TypeError):
        DEFAULT_TOLERANCES.values["forward"]["float32"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        DEFAULT_TOLERANCES.values["new"] = {}  # type: ignore[index]
    source = {"forward": {"float32": 1.0}}
    table = ToleranceTable(source)
    source["forward"]["float32"] = 2.0
    assert table["forward", "float32"] == 1.0


@pytest.mark.parametrize("text, message", [
    ("nope=1", "--tolerance 'nope=1': expected CHECK[.PRECISION]=VALUE with CHECK one of round_trip, forward"),
    ("forward", "--tolerance 'forward': expected CHECK[.PRECISION]=VALUE"),
    ("forward.float32=tiny", "--tolerance 'forward.float32=tiny': 'tiny' is not a number"),
    ("synth_psnr.bfloat16=1", "--tolerance 'synth_psnr.bfloat16=1': synth_psnr has no 'bfloat16' tolerance (has float32)"),
])
def test_bad_overrides_are_config_errors(text, message):
    with pytest.raises(ConfigError) as info:
        DEFAULT_TOLERANCES.with_overrides([text])
    assert str(info.value).startswith(message)
