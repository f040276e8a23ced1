"""Download the IXI T1/T2 archives (resumable, size- and checksum-checked) and extract them.

Standard library only (urllib). A transfer writes ``<name>.part`` and continues it with an HTTP
Range request after a dropped connection or on the next run; the file gets its final name only
once its size matches Content-Length and its checksum (when one is known) matches.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from mrsynth.ixi.safe_extract import safe_extract
from mrsynth.errors import DataError
from mrsynth.fileio import atomic_write_text

DEFAULT_BASE_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/"
# MD5 of the archives as published with TorchIO's IXI dataset class (torchio.datasets.ixi).
KNOWN_MD5 = {
    "IXI-T1.tar": "34901a0593b41dd19c1a1f746eac2d58",
    "IXI-T2.tar": "e3140d78730ecdd32ba92da48c0a9aaa",
}
ARCHIVES = {"t1": "IXI-T1.tar", "t2": "IXI-T2.tar"}
RECORD_NAME = "download.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Downloaded:
    url: str
    path: str
    bytes: int
    sha256: str
    md5: str


class _Truncated(Exception):
    """The server closed the connection before sending everything it announced."""


def _file_digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _total_from_headers(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Full file size from Content-Range (partial reply) or Content-Length (whole file)."""
    content_range = response.headers.get("Content-Range")
    if response.status == 206 and content_range:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
        if not match or int(match.group(1)) != offset:
            raise DataError(f"{response.url}: server answered the range request with {content_range!r}")
        return int(match.group(3)) if match.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) + (offset if response.status == 206 else 0) if length else None


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff_s: float = 2.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Downloaded:
    """Download ``url`` to ``dest`` with resume, size check and optional checksum verification."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while not dest.exists():
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:
                    log(f"{url}: server does not resume transfers; starting again from the beginning")
                    offset = 0
                total = _total_from_headers(response, offset)
                with part.open("ab" if offset else "wb") as out, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=dest.name, disable=not progress,
                ) as bar:
                    for block in iter(lambda: response.read(_CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
            size = part.stat().st_size
            if total is not None and size != total:
                if size > total:
                    part.unlink()
                    raise DataError(f"{url}: received {size} bytes but the server announced {total}; removed")
                raise _Truncated(f"connection closed after {size} of {total} bytes")
            part.replace(dest)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # our .part is not a prefix the server recognizes
                log(f"{url}: cannot resume from byte {offset}; starting again")
                part.unlink()
                continue
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (_Truncated, urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DataError(
                    f"{url}: download failed after {retries} retries ({exc}); {have} bytes kept in "
                    f"{part}, run the command again to resume"
                ) from None
            log(f"{url}: {exc}; resuming from byte {have} (retry {attempt}/{retries})")
            time.sleep(backoff_s * attempt)

    digest_sha256, digest_md5 = _file_digests(dest)
    for name, expected, got in (("SHA-256", sha256, digest_sha256), ("MD5", md5, digest_md5)):
        if expected and expected.lower() != got:
            dest.unlink()
            raise DataError(f"{dest}: {name} mismatch (expected {expected.lower()}, got {got}); file removed")
    return Downloaded(url, str(dest), dest.stat().st_size, digest_sha256, digest_md5)


def download_ixi(
    out_dir: Path,
    what: list[str],
    *,
    base_url: str = DEFAULT_BASE_URL,
    sha256: dict[str, str] | None = None,
    keep_archives: bool = False,
    retries: int = 5,
    backoff_s: float = 2.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Download and extract the chosen archives (``t1``, ``t2``) into ``out_dir/IXI-T1`` etc.

    Already extracted folders are skipped. The published MD5 is checked for downloads from
    the default site; ``sha256`` ({"t1": hex}) adds a check for any source. The computed
    checksums are recorded in ``out_dir/download.json``.
    """
    out_dir = Path(out_dir)
    unknown = sorted(set(what) - set(ARCHIVES))
    if unknown or not what:
        raise DataError(f"--what: {','.join(unknown) or '(empty)'} is not one of {', '.join(ARCHIVES)}")
    record_path = out_dir / RECORD_NAME
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    folders = {}
    for key in what:
        name = ARCHIVES[key]
        folder = out_dir / name.removesuffix(".tar")
        folders[key] = folder
        if folder.is_dir():
            log(f"{folder}: already extracted, skipped")
            continue
        url = base_url.rstrip("/") + "/" + name
        known_md5 = KNOWN_MD5[name] if base_url.rstrip("/") == DEFAULT_BASE_URL.rstrip("/") else None
        result = download(url, out_dir / name, sha256=(sha256 or {}).get(key), md5=known_md5, retries=retries,
                          backoff_s=backoff_s, progress=progress, log=log)
        record[name] = asdict(result)
        atomic_write_text(record_path, json.dumps(record, indent=1))
        count = safe_extract(out_dir / name, folder, progress=progress)
        log(f"{folder}: {count} files (sha256 {result.sha256})")
        if not keep_archives:
            (out_dir / name).unlink()
    return folders
