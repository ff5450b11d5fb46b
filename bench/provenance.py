"""Where a run happened: host, software versions and the git state of the checkout."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import bench

REPO = Path(__file__).resolve().parents[1]


def utc_now() -> str:
    """The current UTC time in ISO 8601 with a Z suffix, to the microsecond."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def host_info() -> dict[str, Any]:
    """Host name, OS, kernel, CPU model and count, memory, and whether it looks like a VM."""
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _meminfo("MemTotal"),
        "virtualized": _virtualized(),
    }


def software_info() -> dict[str, Any]:
    """Versions of bench, Python, torch (and its CUDA/ROCm runtime), Triton and the NVIDIA bindings."""
    info: dict[str, Any] = {
        "bench": bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "rocm_runtime": getattr(torch.version, "hip", None),
        "triton": _version("triton"),
        "nvidia_ml_py": _version("nvidia-ml-py"),
    }
    return info


def git_info(repo: Path = REPO) -> dict[str, Any]:
    """Commit, branch and dirty flag of the checkout ``bench`` runs from (nulls outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None and os.environ.get("BENCH_GIT_COMMIT"):
        # A copy of a checkout without .git (a remote GPU machine): the caller states the commit it copied.
        return {"commit": os.environ["BENCH_GIT_COMMIT"], "branch": os.environ.get("BENCH_GIT_BRANCH"),
                "dirty": os.environ.get("BENCH_GIT_DIRTY", "").lower() in ("1", "true", "yes"),
                "source": "environment (BENCH_GIT_COMMIT), the checkout has no .git"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
        "source": "git",
    }


def command_line() -> list[str]:
    """The command line of this process."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo(field: str) -> int | None:
    """A /proc/meminfo field in bytes (Linux), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def mem_available() -> int | None:
    """Host memory available to a new allocation, in bytes (Linux MemAvailable), or None if unknown."""
    return _meminfo("MemAvailable")


def _virtualized() -> bool | None:
    try:
        return "hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
