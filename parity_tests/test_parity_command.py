"""`run.py parity` on a tiny config: table, JSON + Markdown report, exit status."""
from __future__ import annotations

import json

import pytest
import yaml

from mrsynth.cli import main
from mrsynth.parity.report import JSON_FILE, MARKDOWN_FILE
from mrsynth.parity.tolerances import DEFAULT_TOLERANCES


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity-cmd")
    cfg = {
        "data": {"source": "phantom", "root": str(root / "phantom"), "cache_dir": str(root / "cache"),
                 "phantom_subjects": 3, "phantom_shape": [32, 32, 32], "patch_size": [32, 32]},
        "model": {"dims": 2, "depth": 1, "base_channels": 4, "channel_mults": [1, 2], "groups": 2,
                  "norm": "batch", "dropout": 0.1},
        "train": {"steps": 100, "batch_size": 2, "warmup_steps": 10},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _report(out):
    return json.loads((out / JSON_FILE).read_text()), (out / MARKDOWN_FILE).read_text()


def test_parity_command_writes_a_passing_report(tiny_config, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["parity", "--config", str(tiny_config), "--steps", "6", "--out", str(out)]) == 0
    report, md = _report(out)
    assert report["passed"] is True
    checks = {row["check"] for row in report["checks"]}
    assert checks == {"weights", "weight_mismatch", "forward", "bn_stats", "grad", "adamw_step",
                      "trajectory", "synthesis"}
    assert all(row["passed"] for row in report["checks"])
    assert report["context"]["precisions"] == ["float32"] and report["context"]["model"]["norm"] == "batch"
    assert "| check | case | metric | value | tolerance | result | note |" in md
    assert f"{len(report['checks'])}/{len(report['checks'])} checks pass" in md
    printed = capsys.readouterr().out
    assert "synthesis" in printed and "FAIL" not in printed


def test_a_tolerance_that_cannot_be_met_fails_the_command(tiny_config, tmp_path, capsys):
    out = tmp_path / "report"
    before = DEFAULT_TOLERANCES["forward", "float64"]
    code = main(["parity", "--config", str(tiny_config), "--precision", "float64", "--steps", "2",
                 "--out", str(out), "--tolerance", "forward.float64=0"])
    assert code == 1
    report, md = _report(out)
    failed = [row for row in report["checks"] if not row["passed"]]
    assert failed and all(row["check"] == "forward" for row in failed)
    assert "FAIL" in md and report["context"]["tolerances changed on the command line"]["forward"]["float64"] == 0
    assert DEFAULT_TOLERANCES["forward", "float64"] == before  # the defaults are never changed
    assert "FAIL" in capsys.readouterr().out


def test_bad_tolerance_option_is_a_one_line_error(tiny_config, tmp_path, capsys):
    code = main(["parity", "--config", str(tiny_config), "--out", str(tmp_path / "r"), "--tolerance", "nope=1"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --tolerance 'nope=1'") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
