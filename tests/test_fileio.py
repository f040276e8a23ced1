"""Atomic writers: permissions as a plain open would give them, folders swapped without a gap."""
from __future__ import annotations

import os
import stat

import pytest

from mrsynth.fileio import atomic_dir, atomic_path, atomic_write_text, current_umask, sha256_of


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_files_and_folders_follow_the_umask(tmp_path, umask_027):
    assert current_umask() == 0o027
    atomic_write_text(tmp_path / "a.json", "{}")
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    with atomic_dir(tmp_path / "report") as tmp:
        (tmp / "x.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o750


def test_atomic_dir_replaces_a_folder_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp or .old folder left


def test_a_failed_write_keeps_the_previous_file_and_folder(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "v1")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            raise RuntimeError("crash")
    assert (tmp_path / "f.txt").read_text() == "v1" and (tmp_path / "d" / "v1").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt"]


def test_sha256_of_a_file(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_of(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_leftovers_of_killed_writers_are_recognised_and_removed(tmp_path):
    import tempfile

    from mrsynth.fileio import is_temporary_name, remove_leftover_temporaries

    fd, name = tempfile.mkstemp(prefix=".step_00000010.", suffix=".tmp.pt", dir=tmp_path)
    os.close(fd)
    tempfile.mkdtemp(prefix=".eval_test.", suffix=".old", dir=tmp_path)
    for keep in ("run.json", ".hidden", "x_synthT2.nii.gz"):
        (tmp_path / keep).write_text("")
    removed = remove_leftover_temporaries(tmp_path)
    assert len(removed) == 2 and all(is_temporary_name(p.name) for p in removed)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "run.json", "x_synthT2.nii.gz"]
