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


def _tool_output(argv: list[str]) -> str | None:
    """What a node tool prints, or None when it is missing, fails or hangs (20 s)."""
    import shutil
    import subprocess

    tool = shutil.which(argv[0])
    if not tool:
        return None
    try:
        res = subprocess.run([tool, *argv[1:]], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def gpus() -> list[dict]:
    """The node's NVIDIA GPUs (name, driver, memory) from nvidia-smi; [] without one."""
    out = _tool_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                        "--format=csv,noheader"]) or ""
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) == 3]


def interconnect(root: Path = Path("/sys/class/infiniband")) -> list[dict]:
    """InfiniBand / RoCE ports the node shows: device, port, rate, state, link layer."""
    ports = []
    for port in sorted(root.glob("*/ports/*")) if root.is_dir() else []:
        def read(name: str, where: Path = port) -> str | None:
            path = where / name
            return path.read_text().strip() if path.is_file() else None

        ports.append({"device": port.parent.parent.name, "port": port.name,
                      "rate": read("rate"), "state": read("state"),
                      "link_layer": read("link_layer")})
    return ports


def slurm_features(node_name: str) -> list[str] | None:
    """The Slurm node's features (scontrol show node), None outside Slurm."""
    if not (node_name and os.environ.get("SLURM_JOB_ID")):
        return None
    m = re.search(r"\bAvailableFeatures=(\S*)",
                  _tool_output(["scontrol", "show", "node", node_name, "-o"]) or "")
    return [f for f in m.group(1).split(",") if f and f != "(null)"] if m else None


def node(node_name: str = "") -> dict:
    """What a run's node is: cpu(), its GPUs, its InfiniBand / RoCE ports, its Slurm
    features."""
    return {**cpu(), "gpus": gpus(), "interconnect": interconnect(),
            "slurm_features": slurm_features(node_name)}


def describe_node(n: dict) -> str:
    """One line for a report or a study's README."""
    gpu_names = [g["name"] for g in n.get("gpus") or []]
    gpu = f"{len(gpu_names)} x {gpu_names[0]} (driver {n['gpus'][0]['driver']})" \
        if gpu_names else "no GPU"
    active = [f"{p['device']}/{p['port']} {p['rate']} {p['link_layer'] or ''}".strip()
              for p in n.get("interconnect") or [] if "ACTIVE" in (p.get("state") or "")]
    return (f"{one_line(n)}; {gpu}; "
            + (f"interconnect {', '.join(active)}" if active else "no InfiniBand / RoCE port")
            + (f"; Slurm features {','.join(n['slurm_features'])}"
               if n.get("slurm_features") else ""))
