"""The host a benchmark ran on: CPU, memory, load, GPU driver, library versions.

Framework-specific facts (device names, CUDA/cuDNN builds) come from each backend's bench
module; this part needs neither framework.
"""
from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mrsynth.backend import library_versions


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _total_memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return None


def nvidia_smi() -> list[dict[str, str]]:
    """GPU name / driver / memory from nvidia-smi, or [] where there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = "name,driver_version,memory.total"
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    keys = query.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in out.splitlines() if line.strip()]


def host_info() -> dict[str, Any]:
    """Everything about the host that bears on the numbers (load average: how shared it was)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_gib": _total_memory_gib(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpus": nvidia_smi(),
        "libraries": library_versions(),
    }


def host_memory() -> dict[str, float]:
    """This process's peak resident memory (high-water mark since start) and current RSS, in MiB."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    current = None
    statm = Path("/proc/self/statm")
    if statm.is_file():
        current = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"host_peak_rss_mib": peak_kib / 1024, "host_rss_mib": current}
