"""The machine a figure was measured on: CPU model and the vector flags that decide
TensorFlow's kernels, the CPUs this process may use, Python and the packages that set the
numbers. Standard library only (scripts/slow_machine.py loads it before any venv exists)."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

PACKAGES = ("tensorflow", "tf-keras", "horovod", "numpy", "h5py")


def cpu() -> dict:
    """CPU model, logical CPUs of the machine, AVX-512 and AVX2."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    have = set(flags.group(1).split()) if flags else set()
    return {"model": model.group(1).strip() if model else platform.processor() or "unknown",
            "cpus": os.cpu_count(), "avx512f": "avx512f" in have, "avx2": "avx2" in have}


def describe() -> dict:
    """cpu() with the CPUs this process may run on, Python and the package versions."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**cpu(), "cpus_allowed": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "packages": versions}


def one_line(m: dict) -> str:
    """'Intel(R) Xeon(R) ..., 2 CPUs, AVX-512' for a table."""
    vector = "AVX-512" if m.get("avx512f") else "AVX2 only" if m.get("avx2") else "no AVX2"
    return f"{m['model']}, {m['cpus']} CPUs, {vector}"
