"""What a live Slurm cluster offers, as Slurm itself reports it: partitions (`scontrol show
partition -o`), nodes (`scontrol show node -o`) and srun's MPI plugins (`srun --mpi=list`).
`hpctrain doctor` checks a profile against it; `hpctrain profile init` writes one from it.

The parsers are pure (tested on Slurm's own text); `read_*` run the commands.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def find_tool(name: str, env: dict) -> str | None:
    """This environment's own `name` (python, horovodrun, ...), else the one on PATH."""
    own = Path(sys.executable).parent / name
    return str(own) if own.is_file() else shutil.which(name, path=env.get("PATH"))


def run_tool(argv: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a tool found by find_tool; a missing tool or no answer is a failed result (127,
    124), never an exception."""
    tool = find_tool(argv[0], env)
    if tool is None:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")
    argv = [tool, *argv[1:]]
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]}: no answer in {timeout} s")


def last_line(res: subprocess.CompletedProcess) -> str:
    lines = (res.stderr + res.stdout).strip().splitlines()
    return lines[-1].strip() if lines else f"exit {res.returncode}"


def fields(text: str) -> dict[str, str]:
    """`Key=Value` pairs of one `scontrol show -o` record."""
    return {m[1]: m[2] for m in re.finditer(r"(\w+)=(\S*)", text)}


def gres_items(gres: str) -> list[tuple[str, str | None, int]]:
    """(name, type or None, count) of a node's Gres: `gpu:2`, `gpu:a100:4(S:0-1),mps:100`."""
    items = []
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if len(parts) >= 2 and parts[-1].isdigit():
            items.append((parts[0], parts[1] if len(parts) == 3 else None, int(parts[-1])))
    return items


def gres_count(gres: str, name: str) -> int:
    """GPUs a node has for the request `--gres=<name>:N`: `name` is `gpu` (any type) or a
    typed `gpu:a100`."""
    kind, _, typ = name.partition(":")
    return sum(n for k, t, n in gres_items(gres) if k == kind and (not typ or t == typ))


def mpi_plugins(text: str) -> list[str]:
    """Plugin names from `srun --mpi=list` (formats differ between Slurm versions)."""
    names = re.findall(r"\b(pmix(?:_v\d+)?|pmi2|cray_shasta|none)\b", text)
    return sorted(set(names))


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: str  # a host list expression, e.g. node[1-4]
    max_time: str | None  # None: UNLIMITED
    max_nodes: int | None  # None: UNLIMITED
    total_nodes: int
    default: bool
    state: str

    @classmethod
    def parse(cls, record: dict[str, str]) -> Partition:
        def limit(key: str) -> str | None:
            value = record.get(key, "UNLIMITED")
            return None if value in ("UNLIMITED", "", "(null)") else value

        max_nodes = limit("MaxNodes")
        return cls(record["PartitionName"], record.get("Nodes", ""), limit("MaxTime"),
                   int(max_nodes) if max_nodes and max_nodes.isdigit() else None,
                   int(record.get("TotalNodes", "0") or 0), record.get("Default") == "YES",
                   record.get("State", "?"))


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: int
    gres: str
    features: tuple[str, ...]
    state: str

    @classmethod
    def parse(cls, record: dict[str, str]) -> Node:
        features = record.get("AvailableFeatures", "") or record.get("Features", "")
        return cls(record["NodeName"], int(record.get("CPUTot", "0") or 0),
                   int(record.get("RealMemory", "0") or 0), record.get("Gres", ""),
                   tuple(f for f in features.split(",") if f and f != "(null)"),
                   record.get("State", "?"))

    @property
    def usable(self) -> bool:
        return not any(s in self.state for s in ("DOWN", "DRAIN", "FAIL"))

    def gpus(self, name: str = "gpu") -> int:
        return gres_count(self.gres, name)

    def gpu_types(self) -> Counter:
        return Counter({t: n for k, t, n in gres_items(self.gres) if k == "gpu" and t})


def parse_records(text: str) -> list[dict[str, str]]:
    return [fields(line) for line in text.splitlines() if line.strip()]


def read_partitions(env: dict, name: str | None = None
                    ) -> tuple[list[Partition], subprocess.CompletedProcess]:
    res = run_tool(["scontrol", "show", "partition", "-o", *([name] if name else [])], env)
    parts = [Partition.parse(r) for r in parse_records(res.stdout) if "PartitionName" in r]
    return (parts if res.returncode == 0 else []), res


def hostnames(expression: str, env: dict) -> list[str]:
    return run_tool(["scontrol", "show", "hostnames", expression], env).stdout.split()


def read_nodes(names: list[str], env: dict) -> tuple[list[Node], subprocess.CompletedProcess]:
    res = run_tool(["scontrol", "show", "node", "-o", ",".join(names)], env)
    nodes = [Node.parse(r) for r in parse_records(res.stdout) if "NodeName" in r]
    return (nodes if res.returncode == 0 else []), res


def srun_plugins(env: dict) -> tuple[list[str], subprocess.CompletedProcess]:
    res = run_tool(["srun", "--mpi=list"], env)
    return mpi_plugins(res.stdout + res.stderr), res
