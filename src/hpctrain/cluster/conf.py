"""The embedded cluster's configuration files, rendered from templates/ (a pure function).

Every daemon listens on loopback only: slurmctld and the slurmd bind the address their host
name resolves to in slurm.conf (127.0.0.1), because `CommunicationParameters=NoInAddrAny`
stops them from binding INADDR_ANY; slurmdbd binds DbdAddr; MariaDB binds 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
FILES = ("slurm.conf", "gres.conf", "slurmdbd.conf")


@dataclass(frozen=True)
class NodeKind:
    """A group of nodes alike: its GPUs' gres type (`gpu:a100:2`; None: plain `gpu:2`) and
    its node features (for `--constraint`)."""

    gpu_type: str | None = None
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtraPartition:
    name: str
    first: int  # node numbers first..last
    last: int
    max_time: str = "04:00:00"
    max_nodes: int | None = None


def render(*, root: Path, cluster_name: str, nodes: list[str], cpus_per_node: int,
           gpus_per_node: int, partition: str, ports: dict, munge_socket: Path,
           db_password: str, memory_mb: int = 4000, max_time: str = "04:00:00",
           host: str | None = None, kinds: Sequence[NodeKind] = (NodeKind(),),
           extra_partitions: Sequence[ExtraPartition] = ()) -> dict[str, str]:
    """{file name: text} for slurm.conf, gres.conf and slurmdbd.conf. `kinds` split the
    nodes into equal groups in order; `extra_partitions` come after the default one."""
    kinds = list(kinds) or [NodeKind()]
    if len(nodes) % len(kinds):
        raise ValueError(f"{len(nodes)} nodes do not split into {len(kinds)} equal groups")
    size = len(nodes) // len(kinds)
    groups = [{"range": _range(i * size + 1, (i + 1) * size),
               "ports": f"[{ports['slurmd'][i * size]}-{ports['slurmd'][(i + 1) * size - 1]}]",
               "gpu_type": kind.gpu_type, "features": ",".join(kind.features)}
              for i, kind in enumerate(kinds)]
    extra = [{"name": p.name, "range": _range(p.first, p.last), "max_time": p.max_time,
              "max_nodes": p.max_nodes} for p in extra_partitions]
    jenv = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx = {
        "root": root,
        "host": host or socket.gethostname().split(".")[0],
        "cluster_name": cluster_name,
        "nodes": nodes,
        "node_range": _range(1, len(nodes)),
        "groups": groups,
        "extra_partitions": extra,
        "cpus_per_node": cpus_per_node,
        "gpus_per_node": gpus_per_node,
        "memory_mb": memory_mb,
        "partition": partition,
        "max_time": max_time,
        "ports": ports,
        "munge_socket": munge_socket,
        "db_password": db_password,
    }
    return {name: jenv.get_template(f"{name}.j2").render(**ctx) for name in FILES}


def _range(first: int, last: int) -> str:
    return f"node{first}" if first == last else f"node[{first}-{last}]"
