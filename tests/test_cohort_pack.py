"""benchmarks/cohort_pack.py: a cohort packed into parts and unpacked, part by part as separate
device calls carry them, gives back every file's bytes (headers, extensions, byte order, -0.0
and 4D volumes included) and the manifest only once every volume is there; stale or corrupt
volumes are not taken for packed ones, and bad input is one error line with nothing left."""
from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import cohort_pack  # noqa: E402

AFFINE = np.array([[-0.9, 0.1, 0.0, 90.0], [0.0, 1.1, 0.2, -120.0], [0.0, 0.0, 3.0, -60.0], [0, 0, 0, 1]])


def big_endian_with_extension(data: np.ndarray) -> nib.Nifti1Image:
    header = nib.Nifti1Header(endianness=">")
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"scanner notes"))
    return nib.Nifti1Image(data, AFFINE, header)


def write_cohort(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    wrap = np.zeros((12, 10, 8), np.int16)
    wrap[2:9, 3:8, 1:7] = rng.choice(np.array([-32768, 32767, 0, 5], np.int16), size=(7, 5, 6))  # deltas that wrap
    scaled = nib.Nifti1Image(rng.integers(0, 4000, (12, 10, 8)).astype(np.int16), AFFINE)
    scaled.header.set_slope_inter(0.5, 10.0)  # stored values and scaling both kept
    signed_zero = np.zeros((9, 7, 5, 2), np.float32)  # 4D, with a -0.0 outside the non-zero box
    signed_zero[3:6, 2:5, 1:4] = rng.normal(size=(3, 3, 3, 2))
    signed_zero[0, 0, 0, 0] = -0.0
    volumes = {
        "S1": {"t1": nib.Nifti1Image(wrap, AFFINE), "t2": scaled},
        "S2": {"t1": nib.Nifti1Image(signed_zero, np.eye(4)),
               "t2": nib.Nifti1Image(np.zeros((9, 7, 5), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))},
        "S3": {"t1": big_endian_with_extension(rng.integers(0, 300, (6, 6, 6)).astype(np.uint16)),
               "t2": nib.Nifti1Image(rng.integers(0, 300, (6, 6, 6)).astype(np.int32), AFFINE)},
    }
    lines = ["subject,t1,t2,site"]
    for subject, roles in volumes.items():
        for role, image in roles.items():
            (root / subject).mkdir(parents=True, exist_ok=True)
            nib.save(image, str(root / subject / f"{subject}_{role}.nii.gz"))
        lines.append(f"{subject},{subject}/{subject}_t1.nii.gz,{subject}/{subject}_t2.nii.gz,{'AB'[len(lines) % 2]}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def assert_same_cohort(manifest: Path, unpacked: Path) -> None:
    with open(manifest) as handle:
        original = list(csv.DictReader(handle))
    with open(unpacked / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["subject"], r["site"]) for r in rows] == [(r["subject"], r["site"]) for r in original]
    for before, after in zip(original, rows):
        for role in ("t1", "t2"):
            assert Path(after[role]).name == Path(before[role]).name
            old = gzip.decompress((manifest.parent / before[role]).read_bytes())
            assert gzip.decompress((unpacked / after[role]).read_bytes()) == old


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / "cohort_pack.py"), *args], capture_output=True, text=True)


def test_a_cohort_unpacked_part_by_part_is_the_same_files_and_manifest(tmp_path):
    manifest = write_cohort(tmp_path / "cohort")
    parts = cohort_pack.pack(manifest, tmp_path / "packed", max_mib=1e-4)  # a part per pair
    assert [p.name for p in parts] == ["part-0.npz", "part-1.npz", "part-2.npz"]

    first_call = tmp_path / "first_call"  # the first device call carries the index and part 0 only
    first_call.mkdir()
    for name in ("index.json", "part-0.npz"):
        (first_call / name).write_bytes((tmp_path / "packed" / name).read_bytes())
    device = tmp_path / "device"
    assert cohort_pack.unpack(first_call, device) == ["part-1.npz", "part-2.npz"]
    assert (device / "S1" / "S1_t1.nii.gz").is_file() and not (device / "manifest.csv").exists()
    assert cohort_pack.unpack(tmp_path / "packed", device) == []
    assert_same_cohort(manifest, device)
    loaded = nib.load(str(device / "S1" / "S1_t2.nii.gz"))  # scaling kept: nibabel reads the same values
    original = nib.load(str(manifest.parent / "S1" / "S1_t2.nii.gz"))
    np.testing.assert_array_equal(loaded.get_fdata(), original.get_fdata())


def test_a_stale_or_corrupt_volume_is_replaced_not_kept(tmp_path):
    first = cohort_pack.pack(write_cohort(tmp_path / "old", seed=1), tmp_path / "old_packed", 40)[0].parent
    device = tmp_path / "device"
    assert cohort_pack.unpack(first, device) == []  # another cohort's volumes, same names
    (device / "S3" / "S3_t2.nii.gz").write_bytes(b"torn")
    manifest = write_cohort(tmp_path / "new", seed=2)
    assert cohort_pack.unpack(cohort_pack.pack(manifest, tmp_path / "packed", 40)[0].parent, device) == []
    assert_same_cohort(manifest, device)


def test_bad_input_is_one_error_line_and_leaves_nothing(tmp_path):
    manifest = write_cohort(tmp_path / "cohort")
    rows = manifest.read_text().splitlines()
    (tmp_path / "cohort" / "masks.csv").write_text(rows[0] + ",mask\n" + rows[1] + ",x.nii.gz\n")
    (tmp_path / "cohort" / "same.csv").write_text(rows[0] + "\nS9,S1/S1_t1.nii.gz,S1/S1_t1.nii.gz,A\n")
    (tmp_path / "cohort" / "S1" / "S1_t2.nii.gz").write_bytes(b"not a volume")
    cases = {"masks.csv": "carries exactly subject, t1, t2, site", "same.csv": "share the file name",
             "manifest.csv": "S1_t2.nii.gz"}
    for name, problem in cases.items():
        done = cli("pack", "--manifest", str(tmp_path / "cohort" / name), "--out", str(tmp_path / name))
        assert done.returncode == 1 and done.stderr.startswith("error: ") and problem in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / name).exists() and not list(tmp_path.glob(f".{name}.*"))

    good = write_cohort(tmp_path / "good")
    cohort_pack.pack(good, tmp_path / "packed", max_mib=1e-4)
    part = tmp_path / "packed" / "part-1.npz"
    part.write_bytes(part.read_bytes()[:200])  # torn in transfer
    done = cli("unpack", "--packed", str(tmp_path / "packed"), "--out", str(tmp_path / "device"))
    assert done.returncode == 1 and done.stderr.startswith(f"error: {part}") and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "device" / "manifest.csv").exists() and not (tmp_path / "device" / "S2").exists()

    index = tmp_path / "packed" / "index.json"
    index.write_text(index.read_text().replace('"format": 1', '"format": 2'))
    with pytest.raises(ValueError, match="format 2"):
        cohort_pack.unpack(tmp_path / "packed", tmp_path / "device")
