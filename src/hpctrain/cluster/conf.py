"""The embedded cluster's configuration files, rendered from templates/ (a pure function).

Every daemon listens on loopback only: slurmctld and the slurmd bind the address their host
name resolves to in slurm.conf (127.0.0.1), because `CommunicationParameters=NoInAddrAny`
stops them from binding INADDR_ANY; slurmdbd binds DbdAddr; MariaDB binds 127.0.0.1.
"""

from __future__ import annotations

import socket
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
FILES = ("slurm.conf", "gres.conf", "slurmdbd.conf")


def render(*, root: Path, cluster_name: str, nodes: list[str], cpus_per_node: int,
           gpus_per_node: int, partition: str, ports: dict, munge_socket: Path,
           db_password: str, memory_mb: int = 4000, max_time: str = "04:00:00",
           host: str | None = None) -> dict[str, str]:
    """{file name: text} for slurm.conf, gres.conf and slurmdbd.conf."""
    jenv = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx = {
        "root": root,
        "host": host or socket.gethostname().split(".")[0],
        "cluster_name": cluster_name,
        "nodes": nodes,
        "node_range": f"node[1-{len(nodes)}]",
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
