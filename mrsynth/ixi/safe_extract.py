"""Extract a tar archive without letting any member land outside the target folder.

Every member is checked before anything is written: no absolute names, no ``..``, no links
whose target leaves the folder, no paths through a link, no device files or FIFOs. On Python
versions that have it, tarfile's own ``filter="data"`` runs as a second line of defence. The
extraction goes to a temporary folder that is renamed onto the target only when complete.
"""
from __future__ import annotations

import posixpath
import tarfile
from pathlib import Path

from tqdm import tqdm

from mrsynth.errors import DataError
from mrsynth.fileio import atomic_dir

_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4


def _inside(path: str) -> bool:
    """Whether a normalized relative POSIX path stays inside the extraction folder."""
    return path != ".." and not path.startswith("../") and not posixpath.isabs(path)


def check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Raise DataError naming the first member that could write outside the target folder."""
    links: set[str] = set()
    for member in members:
        name = member.name
        problem = None
        if posixpath.isabs(name) or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
            problem = "absolute path"
        elif ".." in name.replace("\\", "/").split("/"):
            problem = "'..' in the path"
        elif member.isdev():
            problem = "device file or FIFO"
        elif not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            problem = "unsupported member type"
        else:
            normal = posixpath.normpath(name)
            parents = [posixpath.join(*normal.split("/")[:i]) for i in range(1, normal.count("/") + 1)]
            if any(p in links for p in parents):
                problem = "path through a link"
            elif member.issym() or member.islnk():
                target = member.linkname
                if member.issym():  # relative to the link's own folder
                    target = posixpath.join(posixpath.dirname(normal), target)
                if posixpath.isabs(member.linkname) or not _inside(posixpath.normpath(target)):
                    kind = "symlink" if member.issym() else "hard link"
                    problem = f"{kind} to {member.linkname!r} points outside the target"
                links.add(normal)
        if problem:
            raise DataError(f"{archive}: unsafe member {name!r} ({problem}); nothing was extracted")


def safe_extract(archive: Path, target: Path, *, progress: bool = True) -> int:
    """Extract ``archive`` into ``target`` (created atomically); returns the number of members."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            check_members(archive, members)
            with atomic_dir(target) as tmp:
                for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, tmp, filter="data")
                    else:  # Python < 3.11.4: our own checks above are the only guard
                        tar.extract(member, tmp)
    except _FILTER_ERROR as exc:  # only reached if tarfile's filter is stricter than ours
        raise DataError(f"{archive}: unsafe member ({exc}); nothing was extracted") from None
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
    return len(members)
