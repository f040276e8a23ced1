"""On-disk cache of preprocessed volumes: uncompressed ``.npy`` arrays read with mmap.

gzip decoding, reorientation, resampling and normalization happen once per (input files,
settings); training workers then memory-map the arrays, so they share the page cache instead
of each holding a copy. An entry is a folder ``<cache_dir>/<subject>-<key>/`` with one ``.npy``
per array and ``meta.json``; it is built in a temporary folder and renamed into place, so a
failure or a crash leaves no partial entry, and two processes racing for the same entry both
end up reading one complete copy.

The key hashes, for every input file, its absolute path, size, mtime_ns and the sha1 of its
first and last MiB (cheap, and it catches a file replaced within the mtime resolution), plus
the settings that change the result, the stored layout and :data:`CODE_VERSION`.

Layout: every array is stored slice-axis-first (``np.moveaxis(volume, slice_axis, 0)``, C
order), so a 2D training slice, and a 2.5D stack of neighbouring slices, is one contiguous
read; :func:`read_entry` hands back views with the axes moved back, so every consumer sees
the volume on its input grid.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mrsynth.fileio import current_umask

# Bump when preprocessing code changes its results or the stored layout: every existing entry
# becomes stale. 2: arrays stored slice-axis-first.
CODE_VERSION = 2
_MIB = 1 << 20
_META = "meta.json"


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Identity of a file's content without reading all of it."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        digest.update(fh.read(_MIB))
        if stat.st_size > 2 * _MIB:
            fh.seek(-_MIB, os.SEEK_END)
            digest.update(fh.read(_MIB))
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha1_ends": digest.hexdigest()}


def cache_key(files: dict[str, Path | None], settings: dict[str, Any]) -> str:
    """Hex key of (input files, preprocessing settings, code version)."""
    ident = {
        "code_version": CODE_VERSION,
        "files": {role: (file_fingerprint(p) if p is not None else None) for role, p in sorted(files.items())},
        "settings": settings,
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def entry_dir(cache_dir: Path, subject: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", subject)[:64] or "subject"
    return Path(cache_dir) / f"{safe}-{key[:24]}"


def open_stored(path: Path | str, slice_axis: int) -> np.ndarray:
    """A stored (slice-axis-first) array memory-mapped, as a view on the input grid."""
    return np.moveaxis(np.load(path, mmap_mode="r"), 0, slice_axis)


def read_entry(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Memory-mapped arrays (views on the input grid) and metadata of a complete entry, or None
    when absent/unreadable."""
    meta_path = Path(path) / _META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: open_stored(Path(path) / f"{name}.npy", meta["slice_axis"]) for name in meta["arrays"]}
    except (OSError, ValueError, KeyError):
        return None
    return arrays, meta


def write_entry(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], slice_axis: int) -> None:
    """Write an entry atomically (temporary folder, then one rename: first writer wins), every
    array stored ``slice_axis``-first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # a shared cache: readable as a plain mkdir would make it
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(np.moveaxis(array, slice_axis, 0)))
        (tmp / _META).write_text(json.dumps({**meta, "arrays": sorted(arrays), "slice_axis": slice_axis}, indent=1))
        if path.exists() and read_entry(path) is None:
            shutil.rmtree(path, ignore_errors=True)  # a broken entry left by an older version
        try:
            os.rename(tmp, path)
        except OSError:
            if read_entry(path) is None:  # not another process's complete entry: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
