"""Carry a cohort to the device machine: its NIfTI pairs packed losslessly into parts that fit
the machine's 64 MiB transfer per call, unpacked there into the same volumes and a manifest.

The 43 `brats18` pairs are 176 MB as .nii.gz, so they need two or three calls: each call carries
one or more parts (and the index), `unpack` writes the volumes of the parts present into a
folder that stays on the warm machine, and the manifest appears once every volume is there.
Each volume keeps its on-disk dtype and values (unscaled), its NIfTI-1 header and extensions
byte for byte (so the affine, voxel size and scaling), and its file name; only its non-zero box travels, integer volumes as
differences along the first axis, bzip2-compressed (bzip2 beat LZMA in size and time here).

    python benchmarks/cohort_pack.py pack --manifest ../shared/data/brats18/manifest.csv --out PACKED --max-mib 40
    python benchmarks/cohort_pack.py unpack --packed PACKED --out COHORT    # on the device, per call

Parts are .npz files of uint8 arrays read with ``allow_pickle=False`` and the index is JSON:
unpacking runs no code from them. A tool for experiments, not part of the package.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mrsynth.fileio import atomic_path  # noqa: E402

FORMAT = 1
ROLES = ("t1", "t2")
INDEX = "index.json"


def encode(path: Path) -> tuple[dict, bytes, bytes]:
    """(index entry, compressed payload, header bytes) of one NIfTI-1 volume."""
    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image) or isinstance(image, nib.Nifti2Image) or image.dataobj.offset < 352:
        raise ValueError(f"{path}: only single-file NIfTI-1 volumes (.nii, .nii.gz) are packed")
    with nib.openers.ImageOpener(str(path)) as handle:  # header and extensions as stored, byte for byte
        stored = handle.read(image.dataobj.offset)
    raw = np.asarray(image.dataobj.get_unscaled())
    found = np.argwhere(raw != 0)
    box = ([[int(lo), int(hi) + 1] for lo, hi in zip(found.min(0), found.max(0))] if found.size
           else [[0, 0] for _ in raw.shape])
    crop = np.ascontiguousarray(raw[tuple(slice(lo, hi) for lo, hi in box)], raw.dtype.newbyteorder("<"))
    delta = bool(np.issubdtype(crop.dtype, np.integer)) and crop.shape[0] > 1
    if delta:  # modular differences in the volume's own dtype: np.cumsum in that dtype undoes them exactly
        crop = np.concatenate([crop[:1], crop[1:] - crop[:-1]])
    entry = {"file": path.name, "dtype": raw.dtype.str, "shape": list(raw.shape), "box": box, "delta": delta}
    return entry, bz2.compress(crop.tobytes()), stored


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


def pack(manifest: Path, out: Path, max_mib: float) -> list[Path]:
    """Write ``out/index.json`` and ``out/part-K.npz`` (each at most ``max_mib`` MiB unless one
    pair alone is larger); returns the parts."""
    with open(manifest) as handle:
        rows = list(csv.DictReader(handle))
    out.mkdir(parents=True, exist_ok=True)
    subjects, parts, current, size = [], [], {}, 0

    def close_part() -> None:
        nonlocal current, size
        if current:
            with atomic_path(out / f"part-{len(parts)}.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **current)
            parts.append(out / f"part-{len(parts)}.npz")
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
            roles[role] = {**entry, "part": len(parts), "key": key}
        size += pair_bytes
        subjects.append({"subject": row["subject"], "site": row.get("site", ""), **roles})
    close_part()
    with atomic_path(out / INDEX) as tmp:
        Path(tmp).write_text(json.dumps({"format": FORMAT, "subjects": subjects}, indent=1))
    return parts


def unpack(packed: Path, out: Path) -> list[str]:
    """Write the volumes of the parts present under ``out/<subject>/`` (those already there are
    kept) and, once every volume is there, ``out/manifest.csv``; returns the missing parts' names."""
    index = json.loads((packed / INDEX).read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{packed / INDEX}: format {index.get('format')!r}, this tool reads {FORMAT}")
    missing, opened = set(), {}
    for subject in index["subjects"]:
        for role in ROLES:
            entry = subject[role]
            target = out / subject["subject"] / entry["file"]
            if target.is_file():
                continue
            part = packed / f"part-{entry['part']}.npz"
            if not part.is_file():
                missing.add(part.name)
                continue
            if part not in opened:
                opened[part] = np.load(part, allow_pickle=False)
            data = opened[part]
            target.parent.mkdir(parents=True, exist_ok=True)
            nifti = decode(entry, data[entry["key"]].tobytes(), data[f"{entry['key']}_header"].tobytes())
            with atomic_path(target) as tmp:
                Path(tmp).write_bytes(gzip.compress(nifti, compresslevel=1) if target.suffix == ".gz" else nifti)
    if not missing:
        lines = ["subject,t1,t2,site"] + [
            f"{s['subject']},{s['subject']}/{s['t1']['file']},{s['subject']}/{s['t2']['file']},{s['site']}"
            for s in index["subjects"]]
        with atomic_path(out / "manifest.csv") as tmp:
            Path(tmp).write_text("\n".join(lines) + "\n")
    return sorted(missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="a manifest's pairs into OUT/index.json and OUT/part-K.npz")
    packing.add_argument("--manifest", type=Path, required=True, help="CSV with subject, t1, t2 (and site)")
    packing.add_argument("--out", type=Path, required=True)
    packing.add_argument("--max-mib", type=float, default=40.0, help="size of a part (default 40)")
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
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
