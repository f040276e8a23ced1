"""``download-ixi``: fetch the IXI T1/T2 archives (resumable, verified) and extract them safely."""
from __future__ import annotations

import argparse
from pathlib import Path

from mrsynth.commands.common import add_out_argument, program_name
from mrsynth.console import progress_enabled
from mrsynth.ixi.download import ARCHIVES, DEFAULT_BASE_URL, download_ixi
from mrsynth.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out_argument(parser, "folder for IXI-T1/ and IXI-T2/", type=Path, required=True)
    parser.add_argument("--what", default="t1,t2", help="archives to fetch: t1,t2 (default both)")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"where the archives live (default {DEFAULT_BASE_URL})")
    parser.add_argument("--sha256", action="append", default=[], metavar="KEY=HEX",
                        help="expected SHA-256 of an archive, e.g. t1=ab12...; repeatable "
                        "(the computed ones are recorded in OUT/download.json)")
    parser.add_argument("--keep-archives", action="store_true", help="keep the .tar files after extraction")
    parser.add_argument("--retries", type=int, default=5, help="resume attempts after a dropped connection")


def _parse_sha256(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in ARCHIVES or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise DataError(f"--sha256 {item!r}: expected KEY=HEX with KEY in {', '.join(ARCHIVES)} and 64 hex digits")
        out[key] = value.lower()
    return out


def run(args: argparse.Namespace) -> int:
    what = [w.strip().lower() for w in args.what.split(",") if w.strip()]
    folders = download_ixi(args.out, what, base_url=args.base_url, sha256=_parse_sha256(args.sha256),
                           keep_archives=args.keep_archives, retries=args.retries, progress=progress_enabled())
    for key, folder in folders.items():
        print(f"{key}: {folder}")
    if {"t1", "t2"} <= set(folders):
        print(f"next: {program_name()} prepare-ixi --t1-dir {folders['t1']} --t2-dir {folders['t2']} "
              f"--out {Path(args.out) / 'prepared'} --n4 --workers 8")
    return 0
