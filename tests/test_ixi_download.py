"""download-ixi against a local HTTP server (127.0.0.1, a thread, stopped after each test):
full download with size check, resume after a dropped connection, checksum mismatch, and
extraction that refuses members escaping the target folder."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from mrsynth.cli import main
from mrsynth.ixi.download import download, download_ixi
from mrsynth.ixi.safe_extract import safe_extract
from mrsynth.errors import DataError


def make_tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeIXI:
    """Serves ``files`` with Range support; ``drop_first`` cuts the first transfer midway."""

    def __init__(self, files: dict[str, bytes], drop_first: bool = False):
        self.files, self.drop_first, self.requests = files, drop_first, []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                fake.requests.append((name, self.headers.get("Range")))
                body = fake.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if fake.drop_first:
                    fake.drop_first = False
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/IXI/"

    def __enter__(self) -> FakeIXI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


T1_TAR = make_tar({"IXI002-Guys-0828-T1.nii.gz": b"t1" * 50_000, "IXI012-HH-1211-T1.nii.gz": b"x" * 1000})
T2_TAR = make_tar({"IXI002-Guys-0828-T2.nii.gz": b"t2" * 40_000})
QUIET = dict(progress=False, log=lambda _: None, backoff_s=0.0)


def test_full_download_and_extract(tmp_path):
    with FakeIXI({"IXI-T1.tar": T1_TAR, "IXI-T2.tar": T2_TAR}) as server:
        folders = download_ixi(tmp_path, ["t1", "t2"], base_url=server.url,
                               sha256={"t1": hashlib.sha256(T1_TAR).hexdigest()}, **QUIET)
    assert sorted(p.name for p in folders["t1"].iterdir()) == ["IXI002-Guys-0828-T1.nii.gz", "IXI012-HH-1211-T1.nii.gz"]
    assert (folders["t2"] / "IXI002-Guys-0828-T2.nii.gz").read_bytes() == b"t2" * 40_000
    record = json.loads((tmp_path / "download.json").read_text())
    assert record["IXI-T1.tar"]["sha256"] == hashlib.sha256(T1_TAR).hexdigest()
    assert record["IXI-T2.tar"]["bytes"] == len(T2_TAR)
    assert not list(tmp_path.glob("*.tar*"))  # archives removed after extraction
    # A second run finds the extracted folders and asks the server for nothing.
    with FakeIXI({}) as server:
        download_ixi(tmp_path, ["t1", "t2"], base_url=server.url, **QUIET)
        assert server.requests == []


def test_resume_after_dropped_connection(tmp_path):
    with FakeIXI({"IXI-T1.tar": T1_TAR}, drop_first=True) as server:
        result = download(server.url + "IXI-T1.tar", tmp_path / "IXI-T1.tar", md5=hashlib.md5(T1_TAR).hexdigest(),
                          **QUIET)
        assert server.requests[0] == ("IXI-T1.tar", None)
        assert server.requests[1] == ("IXI-T1.tar", f"bytes={len(T1_TAR) // 2}-")  # resumed, not restarted
    assert (tmp_path / "IXI-T1.tar").read_bytes() == T1_TAR
    assert result.bytes == len(T1_TAR) and not (tmp_path / "IXI-T1.tar.part").exists()


def test_truncated_transfer_is_kept_and_resumed_by_the_next_run(tmp_path):
    with FakeIXI({"IXI-T2.tar": T2_TAR}, drop_first=True) as server:
        with pytest.raises(DataError, match="run the command again to resume"):
            download(server.url + "IXI-T2.tar", tmp_path / "IXI-T2.tar", retries=0, **QUIET)
        assert (tmp_path / "IXI-T2.tar.part").stat().st_size == len(T2_TAR) // 2  # size check caught it
        assert not (tmp_path / "IXI-T2.tar").exists()
        download(server.url + "IXI-T2.tar", tmp_path / "IXI-T2.tar", retries=0, **QUIET)
        assert server.requests[-1][1] == f"bytes={len(T2_TAR) // 2}-"
    assert (tmp_path / "IXI-T2.tar").read_bytes() == T2_TAR


def test_checksum_mismatch_is_an_error(tmp_path, capsys):
    with FakeIXI({"IXI-T1.tar": T1_TAR}) as server:
        code = main(["download-ixi", "--out", str(tmp_path), "--what", "t1", "--base-url", server.url,
                     "--sha256", "t1=" + "0" * 64, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "SHA-256 mismatch" in err and hashlib.sha256(T1_TAR).hexdigest() in err
    assert not (tmp_path / "IXI-T1.tar").exists() and not (tmp_path / "IXI-T1").exists()


def test_http_error_is_a_one_line_error(tmp_path):
    with FakeIXI({}) as server:
        with pytest.raises(DataError, match="HTTP 404"):
            download_ixi(tmp_path, ["t1"], base_url=server.url, **QUIET)


def _tar_with(tmp_path: Path, add) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("IXI002-Guys-0828-T1.nii.gz")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
        add(tar)
    return path


def _file(name: str):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    return add


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return add


def _device(name: str):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.CHRTYPE
        tar.addfile(info)
    return add


@pytest.mark.parametrize(
    "add, member, problem",
    [
        (_file("../evil"), "../evil", "'..' in the path"),
        (_file("/abs"), "/abs", "absolute path"),
        (_file("sub/../../evil"), "sub/../../evil", "'..' in the path"),
        (_link("escape", "../../outside"), "escape", "symlink to '../../outside' points outside"),
        (_link("abs_link", "/etc/passwd"), "abs_link", "symlink to '/etc/passwd' points outside"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "hard", "hard link to '../outside' points outside"),
        (_device("null"), "null", "device file"),
    ],
)
def test_safe_extract_rejects_escaping_members(tmp_path, add, member, problem):
    archive = _tar_with(tmp_path, add)
    target = tmp_path / "out" / "IXI-T1"
    with pytest.raises(DataError, match="unsafe member") as info:
        safe_extract(archive, target, progress=False)
    assert repr(member) in str(info.value) and problem in str(info.value)
    assert not target.exists() and not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_safe_extract_rejects_writing_through_a_link(tmp_path):
    def add(tar: tarfile.TarFile) -> None:
        _link("here", ".")(tar)  # harmless on its own ...
        _file("here/x")(tar)  # ... but nothing may be written through it

    with pytest.raises(DataError, match="path through a link"):
        safe_extract(_tar_with(tmp_path, add), tmp_path / "out", progress=False)


def test_safe_extract_allows_links_inside(tmp_path):
    archive = _tar_with(tmp_path, _link("latest.nii.gz", "IXI002-Guys-0828-T1.nii.gz"))
    assert safe_extract(archive, tmp_path / "out", progress=False) == 2
    assert (tmp_path / "out" / "latest.nii.gz").read_bytes() == b"abc"
