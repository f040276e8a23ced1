"""Folder jobs over hospital exports: a full disk, unclean inputs and killed jobs end in one line each.

One tiny JAX run on the phantom (trained once per module). Every failure case checks what a user
of a long job needs: one ``error:`` line per failure and no traceback, a non-zero exit, nothing
half-written (no temporary left in the output folder), and a summary saying what was written,
what failed and what was skipped.
"""
from __future__ import annotations

import errno
import gzip
import re
import shutil
import struct
from pathlib import Path

import nibabel as nib
import pytest

import mrsynth.inference.synthesis as synthesis
from mrsynth.cli import main
from mrsynth.data.io import read_nifti
from mrsynth.errors import DataError
from mrsynth.fileio import is_temporary_name
from mrsynth.inference.synthesis import list_inputs, output_name, sidecar_name


@pytest.fixture(scope="module")
def trained(tiny_run) -> tuple[Path, Path]:
    """(run dir, phantom folder) of a 6-step JAX run on 32x32x24 phantom heads with brain masks
    (test_training_loop's tiny_overrides; conftest.py's run, shared with other tests)."""
    home, run = tiny_run("jax")
    return run, home / "phantom"


@pytest.fixture
def inputs(trained, tmp_path) -> Path:
    """A folder of three T1 files (the phantom's heads, under three subject names)."""
    t1s = sorted(trained[1].glob("*-T1.nii.gz"))
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        shutil.copy(t1s[index % len(t1s)], folder / f"S{index}-T1.nii.gz")
    return folder


def predict(run: Path, source: Path, out: Path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    """(exit code, stdout, the ``error:`` lines of stderr) of one predict job; never a traceback."""
    code = main(["predict", "--checkpoint", str(run), "--input", str(source), "--out", str(out),
                 "--mask", "nonzero", *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, [line for line in captured.err.splitlines() if line.startswith("error:")]


def no_temporaries(folder: Path) -> bool:
    return not any(p.name.startswith(".") or is_temporary_name(p.name) for p in folder.iterdir())


def test_full_disk_stops_the_job_in_one_line_and_a_rerun_skips_what_exists(trained, inputs, tmp_path,
                                                                           capsys, monkeypatch):
    run, out = trained[0], tmp_path / "out"
    real_save, calls = nib.save, []

    def disk_fills_up(image, filename):
        calls.append(filename)
        if len(calls) == 3:  # the second input's T2 (after the first's T2 and mask): half written, then full
            Path(filename).write_bytes(b"\x1f\x8b partial")
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        real_save(image, filename)

    monkeypatch.setattr(synthesis.nib, "save", disk_fills_up)
    code, stdout, errors = predict(run, inputs, out, capsys)
    assert code == 1
    assert len(errors) == 1
    assert str(out / output_name(inputs / "S1-T1.nii.gz")) in errors[0]
    assert "no space left on device" in errors[0] and "MiB free)" in errors[0]
    assert "1 written, 1 failed, 0 skipped, 1 not attempted (stopped)" in stdout
    assert f"failed: {inputs / 'S1-T1.nii.gz'}" in stdout
    assert no_temporaries(out)
    assert sorted(p.name for p in out.iterdir()) == ["S0-T1_synthT2.json", "S0-T1_synthT2.nii.gz", "S0-T1_synthT2_mask.nii.gz"]

    monkeypatch.setattr(synthesis.nib, "save", real_save)
    code, stdout, errors = predict(run, inputs, out, capsys, "--skip-existing")
    assert (code, errors) == (0, [])
    assert "2 written, 0 failed, 1 skipped" in stdout

    (out / sidecar_name(inputs / "S2-T1.nii.gz")).unlink()  # an output without its sidecar is redone
    code, stdout, _ = predict(run, inputs, out, capsys, "--skip-existing")
    assert code == 0 and "1 written, 0 failed, 2 skipped" in stdout


def corrupt_header(source: Path, target: Path, shape: tuple[int, int, int]) -> Path:
    """A copy of ``source`` whose header claims ``shape`` (the data left as it is)."""
    raw = bytearray(gzip.decompress(source.read_bytes()))
    raw[40:48] = struct.pack("<4h", 3, *shape)  # dim[0..3] of the NIfTI-1 header
    target.write_bytes(gzip.compress(bytes(raw)))
    return target


def test_bad_inputs_are_reported_and_the_job_goes_on(trained, inputs, tmp_path, capsys):
    run, out = trained[0], tmp_path / "out"
    giant = corrupt_header(inputs / "S1-T1.nii.gz", inputs / "S1-T1.nii.gz", (30000, 30000, 30000))
    truncated = inputs / "S3-T1.nii.gz"
    truncated.write_bytes((inputs / "S0-T1.nii.gz").read_bytes()[:500])
    code, stdout, errors = predict(run, inputs, out, capsys)
    assert code == 1 and len(errors) == 2
    assert str(giant) in errors[0] and "30000x30000x30000" in errors[0] and "2048 voxels per axis" in errors[0]
    assert str(truncated) in errors[1]
    assert "2 written, 2 failed, 0 skipped" in stdout and "not attempted" not in stdout
    assert f"failed: {giant}" in stdout and f"failed: {truncated}" in stdout
    assert no_temporaries(out)


@pytest.mark.parametrize("shape, size", [((30000, 30000, 30000), "30000x30000x30000 voxels (100582.8 GiB"),
                                         ((2049, 32, 24), "2049x32x24 voxels (0.0 GiB")])
def test_read_nifti_refuses_an_oversized_header_before_reading_data(trained, tmp_path, shape, size):
    source = sorted(trained[1].glob("*-T1.nii.gz"))[0]
    claimed = corrupt_header(source, tmp_path / "claimed.nii.gz", shape)
    with pytest.raises(DataError, match=rf"claimed\.nii\.gz: the header claims {re.escape(size)}.*2 GiB"):
        read_nifti(claimed)


def test_out_onto_a_file_and_export_under_a_file_are_one_line(trained, inputs, tmp_path, capsys):
    run, blocker = trained[0], tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, errors = predict(run, inputs, blocker, capsys)
    assert code == 1 and errors == [f"error: --out {blocker}: {blocker} is a file, not a folder"]
    assert blocker.read_text() == "not a folder"

    target = blocker / "sub" / "model.safetensors"
    assert main(["export", "--checkpoint", str(run), "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == [f"error: --out {target}: {blocker} is a file, not a folder"]


def test_a_killed_jobs_temporaries_are_neither_inputs_nor_left_behind(trained, inputs, tmp_path, capsys):
    run, out = trained[0], tmp_path / "out"
    out.mkdir()
    leftover = ".S0-T1_synthT2.k1ll3d.tmp.nii.gz"  # what a SIGKILL during nib.save leaves
    for folder in (inputs, out):
        (folder / leftover).write_bytes(b"\x1f\x8b truncated")
    (inputs / ".hidden-T1.nii.gz").write_bytes(b"not an input")
    assert [p.name for p in list_inputs(inputs)] == ["S0-T1.nii.gz", "S1-T1.nii.gz", "S2-T1.nii.gz"]

    code, stdout, errors = predict(run, inputs, out, capsys)
    assert (code, errors) == (0, [])
    assert f"removed 1 temporary file(s) a killed job left in {out}" in stdout
    assert "3 written, 0 failed, 0 skipped" in stdout
    assert no_temporaries(out)


def test_two_jobs_into_one_folder_leave_only_whole_files(trained, inputs, tmp_path):
    """Two predict processes at once over the same inputs into one folder: both succeed, every
    file in place is whole, and neither job's cleanup removed the other's live temporaries."""
    import os
    import subprocess
    import sys

    run, out = trained[0], tmp_path / "shared_out"
    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, str(root / "run.py"), "predict", "--checkpoint", str(run), "--input", str(inputs),
            "--out", str(out), "--mask", "nonzero"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [job.communicate() for job in jobs]
    for job, (stdout, stderr) in zip(jobs, results):
        assert job.returncode == 0, stderr
        assert "3 written, 0 failed, 0 skipped" in stdout
    assert no_temporaries(out)
    for index in range(3):
        nib.load(str(out / f"S{index}-T1_synthT2.nii.gz")).get_fdata()
        assert (out / f"S{index}-T1_synthT2.json").is_file()
