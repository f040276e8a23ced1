"""Find T1/T2 volumes and pair them by subject id (never by sorted position).

Layouts (``data.source``):
- ``ixi`` / ``phantom``: raw IXI names ``IXI002-Guys-0828-T1.nii.gz`` / ``-T2.nii.gz``, with
  optional ``-mask`` / ``-labels`` files beside them; searched recursively under ``data.root``
  (the IXI downloads unpack T1 and T2 into separate folders).
- ``course``: the preprocessed course layout ``IXI162-HH-1548-T1_fcm.nii.gz`` /
  ``-T2_reg_fcm.nii.gz`` (optional ``-mask``).
- ``manifest``: a CSV with columns ``subject,t1,t2[,mask][,mask_method][,site][,split]``; paths
  relative to the CSV's folder; a relative ``data.manifest`` that is not found from the working
  directory is looked up under ``data.root``. A ``split`` column (train/val/test, as
  ``prepare-ixi`` writes) fixes each subject's split; ``mask_method`` (``otsu`` or
  ``skull-strip``, as ``prepare-ixi`` writes) says how the mask files were made, so ``predict``
  can make the same masks itself.
- ``glob``: ``data.t1_glob`` / ``data.t2_glob`` / ``data.mask_glob`` relative to ``data.root``;
  the subject id is the part of the path matched by ``*``.

Unpaired and duplicate subjects are reported with a warning that names them (duplicates are
ambiguous, so they are left out); finding no pair at all is a DataError naming the folder.
"""
from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from mrsynth.config import DataConfig
from mrsynth.errors import DataError

_NII = r"\.nii(?:\.gz)?"
# IXI002-Guys-0828-T1.nii.gz: groups subject (IXI002), site (Guys), scan (0828), role (T1|T2|mask|labels);
# also the raw-file pattern of prepare-ixi, so both tools agree on what an IXI name is.
IXI_FILE_PATTERN = re.compile(rf"^(IXI\d+)-([A-Za-z]+)-(\d+)-(T1|T2|mask|labels){_NII}$")
_COURSE_RE = re.compile(rf"^(IXI\d+)-([A-Za-z]+)-(\d+)-(T1_fcm|T2_reg_fcm|mask){_NII}$")
_COURSE_ROLES = {"T1_fcm": "t1", "T2_reg_fcm": "t2", "mask": "mask"}
_IXI_ROLES = {"T1": "t1", "T2": "t2", "mask": "mask", "labels": "labels"}


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject; ``t2`` is None for T1-only inputs (predict)."""

    subject: str
    t1: Path
    t2: Path | None
    mask: Path | None = None
    labels: Path | None = None
    site: str | None = None
    split: str | None = None  # from a manifest's split column
    mask_method: str | None = None  # how the mask file was made, from a manifest's mask_method column


def discover_pairs(cfg: DataConfig, *, require_t2: bool = True) -> list[SubjectFiles]:
    """All subjects of the configured source, sorted by subject id.

    ``require_t2=False`` also returns T1-only subjects (``t2=None``), e.g. for ``predict``.
    """
    if cfg.source == "manifest":
        if not cfg.manifest:
            raise DataError("data.manifest: required when data.source is 'manifest'")
        where = _manifest_path(cfg)
        found, split_of, method_of = _from_manifest(where)
        pairs = _assemble(found, where, require_t2)
        return [dataclasses.replace(p, split=split_of.get(p.subject), mask_method=method_of.get(p.subject))
                for p in pairs]
    else:
        root = Path(cfg.root)
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found (data.root)")
        where = root
        if cfg.source == "glob":
            if not (cfg.t1_glob and cfg.t2_glob):
                raise DataError("data.t1_glob/data.t2_glob: required when data.source is 'glob'")
            found = _from_globs(root, cfg.t1_glob, cfg.t2_glob, cfg.mask_glob)
        else:
            pattern, roles = (_COURSE_RE, _COURSE_ROLES) if cfg.source == "course" else (IXI_FILE_PATTERN, _IXI_ROLES)
            found = _from_names(root, pattern, roles)
    return _assemble(found, where, require_t2)


def _manifest_path(cfg: DataConfig) -> Path:
    manifest = Path(cfg.manifest)
    if not manifest.is_absolute() and not manifest.exists() and (Path(cfg.root) / manifest).exists():
        return Path(cfg.root) / manifest
    return manifest


# One collected file: (subject, role, path, site).
_Entry = tuple[str, str, Path, "str | None"]


def _from_names(root: Path, pattern: re.Pattern[str], roles: dict[str, str]) -> list[_Entry]:
    entries = []
    for path in sorted(root.rglob("*.nii*")):
        match = pattern.match(path.name)
        if match and path.is_file():
            entries.append((match.group(1), roles[match.group(4)], path, match.group(2)))
    return entries


def _from_manifest(manifest: Path) -> tuple[list[_Entry], dict[str, str], dict[str, str]]:
    """Entries of a CSV manifest, and the split and mask_method columns' values per subject (if present)."""
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest file not found (data.manifest)")
    try:
        with manifest.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest}: unreadable manifest ({exc})") from None
    columns = set(rows[0]) if rows else set()
    missing = {"subject", "t1", "t2"} - columns
    if missing:
        raise DataError(f"{manifest}: manifest needs columns subject,t1,t2[,mask]; missing {', '.join(sorted(missing))}")
    base = manifest.parent
    entries: list[_Entry] = []
    split_of: dict[str, str] = {}
    method_of: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        subject = (row.get("subject") or "").strip()
        if not subject:
            raise DataError(f"{manifest}: line {line} has an empty subject")
        split = (row.get("split") or "").strip()
        if split:
            if split not in ("train", "val", "test"):
                raise DataError(f"{manifest}: line {line} has split {split!r}; expected train, val or test")
            split_of[subject] = split
        method = (row.get("mask_method") or "").strip()
        if method:
            method_of[subject] = method
        site = (row.get("site") or "").strip() or None
        for role in ("t1", "t2", "mask"):
            cell = (row.get(role) or "").strip()
            if not cell:
                continue
            path = Path(cell) if Path(cell).is_absolute() else base / cell
            if not path.is_file():
                raise DataError(f"{path}: file not found (manifest {manifest}, line {line}, column {role})")
            entries.append((subject, role, path, site))
        if not (row.get("t1") or "").strip():
            raise DataError(f"{manifest}: line {line} (subject {subject}) has no t1 path")
    return entries, split_of, method_of


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Regex of a glob pattern whose groups capture what each ``*`` matched."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def _from_globs(root: Path, t1_glob: str, t2_glob: str, mask_glob: str | None) -> list[_Entry]:
    entries: list[_Entry] = []
    for role, pattern in (("t1", t1_glob), ("t2", t2_glob), ("mask", mask_glob)):
        if not pattern:
            continue
        if "*" not in pattern:
            raise DataError(f"data.{role}_glob: {pattern!r} needs a '*' where the subject id is")
        regex = _glob_regex(pattern)
        for path in sorted(root.glob(pattern)):
            match = regex.match(path.relative_to(root).as_posix())
            if not match or not path.is_file():
                continue
            parts: list[str] = []
            for group in match.groups():
                if group and (not parts or parts[-1] != group):
                    parts.append(group)
            if parts:
                entries.append(("_".join(parts), role, path, None))
    return entries


def _assemble(entries: list[_Entry], where: Path, require_t2: bool) -> list[SubjectFiles]:
    by_subject: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    sites: dict[str, str | None] = {}
    for subject, role, path, site in entries:
        by_subject[subject][role].append(path)
        sites.setdefault(subject, site)

    duplicates = sorted(s for s, roles in by_subject.items() if any(len(p) > 1 for p in roles.values()))
    if duplicates:
        detail = "; ".join(
            f"{s}: " + ", ".join(str(p) for paths in by_subject[s].values() if len(paths) > 1 for p in paths)
            for s in duplicates
        )
        warnings.warn(f"{where}: duplicate files for subject(s) {', '.join(duplicates)} left out ({detail})", stacklevel=3)

    pairs: list[SubjectFiles] = []
    t1_only, t2_only = [], []
    for subject in sorted(by_subject):
        if subject in duplicates:
            continue
        roles = by_subject[subject]
        t1 = roles["t1"][0] if roles.get("t1") else None
        t2 = roles["t2"][0] if roles.get("t2") else None
        if t1 is None:
            t2_only.append(subject)
            continue
        if t2 is None:
            t1_only.append(subject)
            if require_t2:
                continue
        pairs.append(
            SubjectFiles(
                subject=subject,
                t1=t1,
                t2=t2,
                mask=roles["mask"][0] if roles.get("mask") else None,
                labels=roles["labels"][0] if roles.get("labels") else None,
                site=sites.get(subject),
            )
        )
    unpaired = [f"{s} (T1 only)" for s in t1_only if require_t2] + [f"{s} (T2 only)" for s in t2_only]
    if unpaired:
        warnings.warn(f"{where}: unpaired subject(s) left out: {', '.join(unpaired)}", stacklevel=3)
    if not pairs:
        what = "T1/T2 pairs" if require_t2 else "T1 volumes"
        raise DataError(f"{where}: no {what} found")
    return pairs
