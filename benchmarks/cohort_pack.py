"""Carry a cohort to the device machine: its NIfTI pairs packed losslessly into parts that fit
the machine's 64 MiB transfer per call, unpacked there into the same volumes and a manifest.

The 43 `brats18` pairs are 176 MB as .nii.gz, so they need two or three calls: each call carries
one or more parts (and the index), `unpack` writes the volumes of the parts present into a
folder that stays on the warm machine, and the manifest appears once every volume is there.
Each volume keeps its on-disk dtype and values (unscaled), its NIfTI-1 header and extensions
byte for byte (so the affine, voxel size and scaling), and its file name. Only the box of its
non-zero stored values travels (-0.0 counts as a value), integer volumes as differences along
the first axis, bzip2-compressed (bzip2 beat LZMA in size and time here).

    python benchmarks/cohort_pack.py pack --manifest ../shared/data/brats18/manifest.csv --out PACKED --max-mib 40
    python benchmarks/cohort_pack.py unpack --packed PACKED --out COHORT    # on the device, per call

At pack time every volume is decoded again and must give the original file's bytes (decompressed);
the index keeps their SHA-256, and unpack checks each volume it writes or finds against it, so a
corrupt part or a stale volume from another pack is never taken for this one. Parts are .npz files
of uint8 arrays read with ``allow_pickle=False`` and the index is JSON: unpacking runs no code
from them. A tool for experiments, not part of the package.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mrsynth.fileio import atomic_path, current_umask  # noqa: E402

FORMAT = 1
ROLES = ("t1", "t2")
COLUMNS = ("subject", "t1", "t2", "site")  # a manifest with others (masks, splits) is refused, not thinned
INDEX = "index.json"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one path component: nothing lands outside OUT


def file_bytes(path: Path) -> bytes:
    """A NIfTI file's bytes, decompressed when it is a .gz."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def encode(path: Path) -> tuple[dict, bytes, bytes]:
    """(index entry, compressed payload, header bytes) of one single-file NIfTI-1 volume, checked
    to decode to the file's own bytes."""
    try:  # the file is read once: the stored values are a view of its own bytes
        original = file_bytes(path)
        stored = nib.Nifti1Header.from_fileobj(io.BytesIO(original))
        offset = int(stored.get_data_offset())
        if stored["magic"].item() != b"n+1" or offset < 352:
            raise ValueError("only single-file NIfTI-1 volumes (.nii, .nii.gz) are packed")
        header = original[:offset]  # header and extensions as stored
        raw = np.ndarray(stored.get_data_shape(), stored.get_data_dtype(), original, offset, order="F")
    except (OSError, ValueError, TypeError, EOFError, nib.spatialimages.HeaderDataError) as error:
        raise ValueError(f"{path}: {error}") from None
    stored_bits = raw.view(f"u{raw.itemsize}") != 0  # -0.0 is a value to keep, not background
    spans = [np.flatnonzero(stored_bits.any(axis=tuple(a for a in range(raw.ndim) if a != axis)))
             for axis in range(raw.ndim)]
    box = [[int(s[0]), int(s[-1]) + 1] if s.size else [0, 0] for s in spans]
    crop = np.ascontiguousarray(raw[tuple(slice(lo, hi) for lo, hi in box)], raw.dtype.newbyteorder("<"))
    delta = bool(np.issubdtype(crop.dtype, np.integer)) and crop.shape[0] > 1
    if delta:  # modular differences in the volume's own dtype: np.cumsum in that dtype undoes them exactly
        crop = np.concatenate([crop[:1], crop[1:] - crop[:-1]])
    entry = {"file": path.name, "dtype": raw.dtype.str, "shape": list(raw.shape), "box": box, "delta": delta,
             "sha256": hashlib.sha256(original).hexdigest()}
    payload = bz2.compress(crop.tobytes())
    if decode(entry, payload, header) != original:
        raise ValueError(f"{path}: does not round-trip (bytes after the volume's data?); not packed")
    return entry, payload, header


def decode(entry: dict, payload: bytes, header: bytes) -> bytes:
    """The volume as a single-file NIfTI-1 (.nii): its stored header and extensions, then its
    stored values, byte for byte (nibabel's writer would choose its own scaling)."""
    stored = np.dtype(entry["dtype"])  # the file's byte order; the payload is little-endian
    crop = np.frombuffer(bz2.decompress(payload), stored.newbyteorder("<")).reshape(
        [hi - lo for lo, hi in entry["box"]])
    if entry["delta"]:
        crop = np.cumsum(crop, axis=0, dtype=crop.dtype)
    volume = np.zeros(entry["shape"], stored)
    volume[tuple(slice(lo, hi) for lo, hi in entry["box"])] = crop
    return header + volume.tobytes(order="F")


def read_manifest(manifest: Path) -> list[dict[str, str]]:
    """The manifest's rows, refused (one line naming the file) unless they can travel whole:
    only the known columns, unique subjects with safe names, distinct T1 and T2 file names."""
    try:
        with open(manifest, newline="") as handle:
            reader = csv.DictReader(handle)
            rows, columns = list(reader), list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{manifest}: {error}") from None
    if set(columns) - set(COLUMNS) or not {"subject", *ROLES} <= set(columns):
        raise ValueError(f"{manifest}: columns {', '.join(columns)}; this tool carries exactly "
                         f"{', '.join(COLUMNS)} (site optional)")
    seen = set()
    for row in rows:
        subject = row["subject"]
        names = [Path(row[role]).name for role in ROLES]
        if not SAFE_NAME.fullmatch(subject) or subject in seen or len(set(names)) < len(names):
            raise ValueError(f"{manifest}: subject {subject!r}: a duplicate or unsafe name, or t1 and t2 "
                             f"share the file name {names[0]!r}")
        seen.add(subject)
    return rows


def pack(manifest: Path, out: Path, max_mib: float) -> list[Path]:
    """Write ``out/index.json`` and ``out/part-K.npz`` (payloads of at most ``max_mib`` MiB a
    part unless one pair alone is larger) into a new folder ``out``; returns the parts. Built in
    a temporary folder beside ``out`` and renamed at the end, so a failure leaves nothing."""
    rows = read_manifest(manifest)
    if out.exists():
        raise ValueError(f"{out}: exists; pack into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        subjects, parts, current, size = [], 0, {}, 0

        def close_part() -> None:
            nonlocal parts, current, size
            if current:
                with open(work / f"part-{parts}.npz", "wb") as handle:
                    np.savez(handle, **current)
                parts += 1
            current, size = {}, 0

        for row in rows:
            encoded = {role: encode(manifest.parent / row[role]) for role in ROLES}
            pair_bytes = sum(len(payload) + len(header) for _, payload, header in encoded.values())
            if current and size + pair_bytes > max_mib * 2**20:
                close_part()
            roles = {}
            for role, (entry, payload, header) in encoded.items():
                key = f"{len(subjects)}_{role}"
                current[key] = np.frombuffer(payload, np.uint8)
                current[f"{key}_header"] = np.frombuffer(header, np.uint8)
                roles[role] = {**entry, "part": parts, "key": key}
            size += pair_bytes
            subjects.append({"subject": row["subject"], "site": row.get("site") or "", **roles})
        close_part()
        (work / INDEX).write_text(json.dumps({"format": FORMAT, "subjects": subjects}, indent=1))
        work.chmod(0o777 & ~current_umask())  # as a plain mkdir would make it (mkdtemp's is private)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return [out / f"part-{k}.npz" for k in range(parts)]


def read_index(packed: Path) -> list[dict]:
    path = packed / INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path}: format {index.get('format') if isinstance(index, dict) else None!r}, "
                         f"this tool reads {FORMAT}")
    try:
        for subject in index["subjects"]:
            names = [subject["subject"]] + [subject[role]["file"] for role in ROLES]
            if not all(isinstance(n, str) and SAFE_NAME.fullmatch(n) for n in names):
                raise ValueError(f"unsafe names {names}")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    return index["subjects"]


def is_unpacked(target: Path, entry: dict) -> bool:
    """Whether ``target`` holds this entry's volume (an earlier call's, or another pack's: no)."""
    try:
        return target.is_file() and hashlib.sha256(file_bytes(target)).hexdigest() == entry["sha256"]
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile):
        return False


def unpack(packed: Path, out: Path) -> list[str]:
    """Write the volumes of the parts present under ``out/<subject>/`` (keeping those already
    there with the right bytes) and, once every volume is there, ``out/manifest.csv``; returns
    the missing parts' names."""
    subjects = read_index(packed)
    todo: dict[int, list[tuple[dict, Path]]] = {}
    for subject in subjects:
        for role in ROLES:
            target = out / subject["subject"] / subject[role]["file"]
            if not is_unpacked(target, subject[role]):
                todo.setdefault(subject[role]["part"], []).append((subject[role], target))
    missing = []
    for part_number, entries in sorted(todo.items()):
        part = packed / f"part-{part_number}.npz"
        if not part.is_file():
            missing.append(part.name)
            continue
        try:
            with np.load(part, allow_pickle=False) as data:
                for entry, target in entries:
                    nifti = decode(entry, data[entry["key"]].tobytes(), data[f"{entry['key']}_header"].tobytes())
                    if hashlib.sha256(nifti).hexdigest() != entry["sha256"]:
                        raise ValueError(f"{entry['key']} does not decode to the packed volume")
                    with atomic_path(target) as tmp:
                        tmp.write_bytes(gzip.compress(nifti, compresslevel=1) if target.suffix == ".gz" else nifti)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{part}: {error}") from None
    if not missing:
        with atomic_path(out / "manifest.csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for s in subjects:
                writer.writerow([s["subject"], *(f"{s['subject']}/{s[role]['file']}" for role in ROLES), s["site"]])
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="a manifest's pairs into OUT/index.json and OUT/part-K.npz")
    packing.add_argument("--manifest", type=Path, required=True, help="CSV with subject, t1, t2 (and site)")
    packing.add_argument("--out", type=Path, required=True)
    packing.add_argument("--max-mib", type=float, default=40.0, help="compressed volumes per part, in MiB (default 40)")
    unpacking = verbs.add_parser("unpack", help="the parts present into OUT/<subject>/ and OUT/manifest.csv")
    unpacking.add_argument("--packed", type=Path, required=True)
    unpacking.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        if args.verb == "pack":
            parts = pack(args.manifest, args.out, args.max_mib)
            sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in parts)
            print(f"packed {args.manifest} into {len(parts)} part(s): {sizes}")
        else:
            missing = unpack(args.packed, args.out)
            print(f"unpacked into {args.out}: " + (f"still missing {', '.join(missing)}" if missing
                                                    else f"complete, {args.out / 'manifest.csv'}"))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
