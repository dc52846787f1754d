"""What a result depends on besides the code under test: versions, machine, commit; and memory.

Peak memory is the process's resident set high-water mark (VmHWM in /proc/self/status). Linux
resets that mark when "5" is written to /proc/self/clear_refs, so the peak of each method's run
can be read on its own; where that file is missing, the mark since process start is reported
(`resource.getrusage`), which then only grows.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"
BYTES_PER_KIB = 1024
# Distributions whose versions are recorded with every result.
RECORDED_PACKAGES = ("torch", "transformers", "numpy", "llama_cpp_python", "triton")
GIT_TIMEOUT_S = 10


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window; False where the kernel does not offer it."""
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RSS)
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """The resident-set peak of this process since the last reset (or since it started)."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * BYTES_PER_KIB
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * BYTES_PER_KIB


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(root: Path) -> dict[str, Any]:
    """The checked-out commit and whether the working tree differs from it."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def environment(root: Path, argv: list[str]) -> dict[str, Any]:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "packages": package_versions(),
        "git": git_commit(root),
        "argv": argv,
    }
