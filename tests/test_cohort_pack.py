"""benchmarks/cohort_pack.py: a cohort packed into parts and unpacked, part by part as separate
device calls carry them, gives back every volume's stored values, dtype, header and affine, and
the manifest only once every volume is there."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cohort_pack  # noqa: E402


def big_endian_with_extension(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    header = nib.Nifti1Header(endianness=">")
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"scanner notes"))
    return nib.Nifti1Image(data, affine, header)


def write_cohort(root: Path) -> Path:
    rng = np.random.default_rng(0)
    affine = np.array([[-0.9, 0.1, 0.0, 90.0], [0.0, 1.1, 0.2, -120.0], [0.0, 0.0, 3.0, -60.0], [0, 0, 0, 1]])
    wrap = np.zeros((12, 10, 8), np.int16)
    wrap[2:9, 3:8, 1:7] = rng.choice(np.array([-32768, 32767, 0, 5], np.int16), size=(7, 5, 6))  # deltas that wrap
    scaled = nib.Nifti1Image(rng.integers(0, 4000, (12, 10, 8)).astype(np.int16), affine)
    scaled.header.set_slope_inter(0.5, 10.0)  # stored values and scaling both kept
    volumes = {
        "S1": {"t1": nib.Nifti1Image(wrap, affine), "t2": scaled},
        "S2": {"t1": nib.Nifti1Image(rng.normal(size=(9, 7, 5)).astype(np.float32), np.eye(4)),
               "t2": nib.Nifti1Image(np.zeros((9, 7, 5), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))},
        "S3": {"t1": big_endian_with_extension(rng.integers(0, 300, (6, 6, 6)).astype(np.uint16), affine),
               "t2": nib.Nifti1Image(rng.integers(0, 300, (6, 6, 6)).astype(np.int32), affine)},
    }
    lines = ["subject,t1,t2,site"]
    for subject, roles in volumes.items():
        for role, image in roles.items():
            (root / subject).mkdir(parents=True, exist_ok=True)
            nib.save(image, str(root / subject / f"{subject}_{role}.nii.gz"))
        lines.append(f"{subject},{subject}/{subject}_t1.nii.gz,{subject}/{subject}_t2.nii.gz,{'AB'[len(lines) % 2]}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_a_cohort_unpacked_part_by_part_is_the_same_volumes_and_manifest(tmp_path):
    manifest = write_cohort(tmp_path / "cohort")
    parts = cohort_pack.pack(manifest, tmp_path / "packed", max_mib=1e-4)  # a part per pair
    assert [p.name for p in parts] == ["part-0.npz", "part-1.npz", "part-2.npz"]

    device = tmp_path / "device"  # the first call carries the index and part 0 only
    first_call = tmp_path / "first_call"
    first_call.mkdir()
    for name in ("index.json", "part-0.npz"):
        (first_call / name).write_bytes((tmp_path / "packed" / name).read_bytes())
    assert cohort_pack.unpack(first_call, device) == ["part-1.npz", "part-2.npz"]
    assert (device / "S1" / "S1_t1.nii.gz").is_file() and not (device / "manifest.csv").exists()
    assert cohort_pack.unpack(tmp_path / "packed", device) == []

    with open(manifest) as handle:
        original = list(csv.DictReader(handle))
    with open(device / "manifest.csv") as handle:
        unpacked = list(csv.DictReader(handle))
    assert [(r["subject"], r["site"]) for r in unpacked] == [(r["subject"], r["site"]) for r in original]
    for before, after in zip(original, unpacked):
        for role in ("t1", "t2"):
            old, new = nib.load(str(manifest.parent / before[role])), nib.load(str(device / after[role]))
            assert Path(after[role]).name == Path(before[role]).name
            stored_old, stored_new = old.dataobj.get_unscaled(), new.dataobj.get_unscaled()
            assert stored_new.dtype == stored_old.dtype
            np.testing.assert_array_equal(stored_new, stored_old)
            np.testing.assert_array_equal(new.affine, old.affine)
            np.testing.assert_array_equal(new.get_fdata(), old.get_fdata())  # the scaling too
            assert new.header.get_zooms() == old.header.get_zooms()
            assert new.header.endianness == old.header.endianness
            assert [e.get_content() for e in new.header.extensions] == [e.get_content() for e in old.header.extensions]


def test_a_pack_of_another_format_is_refused(tmp_path):
    manifest = write_cohort(tmp_path / "cohort")
    cohort_pack.pack(manifest, tmp_path / "packed", max_mib=40)
    index = tmp_path / "packed" / "index.json"
    index.write_text(index.read_text().replace('"format": 1', '"format": 2'))
    try:
        cohort_pack.unpack(tmp_path / "packed", tmp_path / "device")
    except ValueError as error:
        assert "format 2" in str(error)
    else:
        raise AssertionError("a format-2 index was unpacked")
    assert not (tmp_path / "device").exists()
