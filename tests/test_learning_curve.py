"""learning-curve: nested site-stratified draws, one held-out fold scoring every point, a
folder that a later call continues, and a curve whose margins are the evaluations' own."""
from __future__ import annotations

import csv
import json

import pytest

from mrsynth.cli import main
from mrsynth.runs import load_run_config
from mrsynth.errors import ConfigError
from mrsynth.experiments.learning_curve import draw_order, parse_sizes
from tests.test_cross_validation import TINY, phantom_manifest


def test_a_seeds_draws_are_nested_alternate_sites_and_differ_between_seeds():
    sites = {f"S{i:02d}": ("A" if i < 6 else "B" if i < 9 else "C") for i in range(10)}
    order = draw_order(list(sites), sites, seed=0)
    assert sorted(order) == sorted(sites)
    assert len({sites[s] for s in order[:3]}) == 3  # the first three come from three sites
    assert draw_order(list(sites), sites, seed=0) == order and draw_order(list(sites), sites, seed=1) != order


def test_sizes_are_checked_against_the_pool():
    assert parse_sizes("4,1,all,2", 9) == [1, 2, 4, 9]
    for bad in ("0", "10", "x", "-1"):
        with pytest.raises(ConfigError, match="--sizes"):
            parse_sizes(bad, 9)


@pytest.mark.slow
def test_a_learning_curve_scores_every_point_on_the_same_held_out_fold(tmp_path, capsys):
    """Two folds of 4 phantom subjects: 2 held out, sizes 1 and 2 (all), seeds 0 and 1."""
    manifest = phantom_manifest(tmp_path, subjects=4)
    # 20 steps, as test_cross_validation's runs: the same compiled train step (the schedule is
    # part of it), compiled once per test session; one checkpoint a run, at its end
    sets = [*TINY, "data.source=manifest", f"data.manifest={manifest}", "data.patch_size=[48,56]",
            "train.steps=20", "train.ckpt_every=20", f"data.cache_dir={tmp_path / 'cache'}"]
    command = ["learning-curve", "--folds", "2", "--sizes", "1,all", "--seeds", "0,1", "--out", str(tmp_path / "lc"),
               "--no-progress", *[a for s in sets for a in ("--set", s)]]
    assert main(command) == 0
    out = tmp_path / "lc"
    settings = json.loads((out / "curve.json").read_text())
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert sorted((int(r["n"]), int(r["seed"])) for r in rows) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for row in rows:
        point = out / f"seed-{row['seed']}" / f"n-{row['n']}"
        data = load_run_config(point / "run").data
        assert len(data.train_subjects) == int(row["n"]) and data.test_subjects == settings["held_out"]
        assert not set(data.train_subjects) & set(settings["held_out"])
        summary = json.loads((point / "eval" / "summary.json").read_text())["methods"]
        best = max(summary[m]["metrics"]["psnr_z"]["mean"] for m in ("linear", "histmatch"))
        assert float(row["psnr_z_margin"]) == pytest.approx(summary["jax"]["metrics"]["psnr_z"]["mean"] - best)
    first, whole = (load_run_config(out / "seed-0" / f"n-{n}" / "run").data.train_subjects for n in (1, 2))
    assert set(first) < set(whole)
    assert (out / "learning_curve.png").stat().st_size > 0 and "| 2 | 2 |" in (out / "curve.md").read_text()
    table = (out / "curve.csv").read_text()
    capsys.readouterr()
    assert main(command) == 0  # a second call finds every point finished and rewrites the same table
    assert (out / "curve.csv").read_text() == table and "2 training subject(s), 2 seed(s)" in capsys.readouterr().out
    assert main([*command[:6], "0", *command[7:]]) != 0  # other seeds: refused, the folder untouched
    assert "other settings (seeds)" in capsys.readouterr().err and (out / "curve.csv").read_text() == table
