"""Every case of the bad-input corpus (tests/bad_inputs.py) through the CLI, in-process.

A user mistake must end in exactly one ``error:`` line naming the problem, exit code 1, no
traceback, no new file and no temporary left behind, and never run code from the input.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import bad_inputs
from mrsynth.cli import main
from mrsynth.fileio import is_temporary_name


@pytest.fixture(scope="module")
def corpus(tiny_run, tmp_path_factory) -> bad_inputs.Corpus:
    home, _ = tiny_run("torch")  # the session's tiny runs: read, or copied before a case changes them
    return bad_inputs.prepare(home, tmp_path_factory.mktemp("bad_input_cases"))


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("name", list(bad_inputs.CASES))
def test_bad_input_is_one_error_line(corpus, name, capsys, monkeypatch):
    from mrsynth.data import skullstrip

    # predict_without_mask extracts the brain before failing: the corpus's T1 (24 x 28 x 20 voxels
    # of 2 mm, 108 mL) is smaller than any brain (MIN_BRAIN_ML), so a few BET iterations reach the
    # same failure as 1000
    monkeypatch.setattr(skullstrip, "_ITERATIONS", 5)
    case = bad_inputs.CASES[name](corpus)
    before = files_under(case.watch)
    capsys.readouterr()
    code = main(case.argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code != 0, (case.newer, captured.out[-500:])
    assert len(errors) == 1, (case.newer, captured.err[-1000:])
    for text in case.mentions:
        assert text in errors[0], (case.newer, errors[0])
    assert "Traceback" not in captured.err + captured.out
    assert files_under(case.watch) == before, case.newer
    assert not [p for p in case.watch.rglob("*") if is_temporary_name(p.name)]
    if case.marker is not None:
        assert not case.marker.exists()


def test_make_corpus_builds_every_case(corpus):
    cases = bad_inputs.make_corpus(corpus.home, corpus.cases)  # the runs are reused
    assert [c.name for c in cases] == list(bad_inputs.CASES)
