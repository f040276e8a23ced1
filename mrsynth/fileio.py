"""Atomic, durable file writes: a temporary name in the same directory, fsync, rename, fsync.

A crash or a bad input never leaves a half-written output behind, and a file that is in place
is complete even after a power loss. Written files get the permissions a plain ``open`` would
give under the user's umask (``mkstemp`` alone would make them 0600, unreadable to colleagues
on a shared server).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mrsynth.errors import MrsynthError


# Names of the temporaries this module creates: ".<stem>.<random>.tmp<suffixes>" (files and
# folders of atomic_path / atomic_dir) and ".<name>.<random>.old" (a folder being replaced).
TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.(tmp(\.[A-Za-z0-9.]+)?|old)$")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one of this module's temporary names (a killed writer's leftover)."""
    return bool(TEMPORARY_NAME.match(name))


def remove_leftover_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left in ``folder`` (not recursive); return them.

    Call only where no other writer is working in ``folder`` at the same time (a locked run
    folder, or a job's own output folder at its start).
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if is_temporary_name(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def current_umask() -> int:
    """The process umask (read without a window in which it is changed, where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_path(path: Path) -> None:
    """Flush a file's or folder's data and metadata to the disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A full disk while writing it is one line naming ``path`` (:func:`disk_full_error`), so no
    writer needs its own handling. The temporary name keeps the target's suffixes (``x.tmp123.nii.gz``) so writers that
    choose a format from the extension (nibabel) still do the right thing.
    """
    path = Path(path)
    with reporting_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes)
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~current_umask())
            _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        error = disk_full_error(path, exc) if isinstance(exc, Exception) else None
        if error is None:
            raise
        raise error from None


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only on success.

    An existing ``path`` is renamed aside first and deleted only once the new one is in place,
    so a crash at any moment leaves the old or the new folder complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        _fsync_tree(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        _fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (provenance of inputs and weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EIO: "input/output error"}


def disk_full_error(path: str | Path, exc: BaseException) -> MrsynthError | None:
    """The one-line error for a write that failed on a full disk (or quota, or I/O), else None.

    Looks through ``exc``'s causes too (libraries such as orbax wrap the OSError); names the free
    space of ``path``'s file system, so the user knows how much to clear.
    """
    if isinstance(exc, MrsynthError):  # already the one line (a nested writer named its file)
        return None
    seen: BaseException | None = exc
    while seen is not None and not (isinstance(seen, OSError) and seen.errno in _DISK_FULL):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_mib = shutil.disk_usage(existing).free // 2**20
    return MrsynthError(f"{path}: {_DISK_FULL[seen.errno]} ({free_mib} MiB free)")


@contextlib.contextmanager
def reporting_disk_full(path: str | Path) -> Iterator[None]:
    """Writes to ``path`` that do not go through :func:`atomic_path` (an appended log, orbax):
    a full disk inside, also wrapped by a library, leaves as the one line naming ``path``."""
    try:
        yield
    except Exception as exc:
        error = disk_full_error(path, exc)
        if error is None:
            raise
        raise error from None


def make_folder(path: Path, what: str) -> None:
    """Create an output folder, or refuse in one line (a file in the way, no permission)."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise MrsynthError(f"{what}: {blocker} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MrsynthError(f"{what}: cannot create the folder {path} ({exc.strerror})") from None
