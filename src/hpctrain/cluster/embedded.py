"""The embedded Slurm cluster: real slurmctld, slurmdbd (+ MariaDB), munged and 4 slurmd on
this host, each listening on loopback only.

    hpctrain cluster up        # idempotent; waits until node1..node4 are idle
    hpctrain cluster status    # sinfo, and the SLURM_CONF to export
    hpctrain cluster down      # stops this cluster's daemons, removes its /etc/hosts line

All state lives under one directory (resources.cluster_dir(): `.cluster/` of a checkout).
Each install gets its own cluster name (`hpctrain_<hex>`), munge key and database password:
job ids repeat across re-created clusters, and `hpctrain status` tells their runs apart by
the name.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpctrain.cluster import accounting, conf, daemons, hosts
from hpctrain.cluster.conf import ExtraPartition, NodeKind
from hpctrain.cluster.daemons import ClusterError
from hpctrain.resources import cluster_dir

__all__ = ["ClusterError", "EmbeddedCluster", "ExtraPartition", "NodeKind"]

# name -> program; start order (slurmd follow); stopped in reverse
DAEMONS = {"munged": "munged", "mariadbd": "mariadbd", "slurmdbd": "slurmdbd",
           "slurmctld": "slurmctld"}
TOOLS = ("munged", "mungekey", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd",
         "slurmctld", "slurmd", "sinfo", "sacctmgr")


@dataclass
class EmbeddedCluster:
    """Defaults: the demo's cluster (one partition `debug`, untyped gres gpu:2, no
    features). `kinds` splits the nodes into equal groups, one per kind, and
    `extra_partitions` adds partitions beside the default one: a site's layout, e.g. to
    try `hpctrain profile init` on typed GPUs, node features and two partitions."""

    root: Path = field(default_factory=cluster_dir)
    nodes: int = 4
    cpus_per_node: int = 2
    gpus_per_node: int = 2
    base_port: int = 17817
    partition: str = "debug"
    max_time: str = "04:00:00"
    kinds: tuple[NodeKind, ...] = (NodeKind(),)
    extra_partitions: tuple[ExtraPartition, ...] = ()

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    # ---- paths and names -------------------------------------------------------------------
    @property
    def slurm_conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        """munged wants every directory above its socket searchable by all, and a socket path
        is limited to 107 bytes; a checkout in a private home directory (or pytest's 0700
        temporary directories) offers neither, so the socket lives in a short directory of
        its own under /run (or /tmp), named after the cluster's root."""
        base = Path("/run") if os.access("/run", os.W_OK) else Path("/tmp")
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return base / f"hpctrain-munge-{tag}" / "munge.socket"

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    @property
    def cluster_name(self) -> str:
        """Generated once per install (the cluster directory), kept in etc/cluster-name."""
        path = self.root / "etc" / "cluster-name"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"hpctrain_{secrets.token_hex(3)}\n")
        return path.read_text().strip()

    def pid_file(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    @property
    def ports(self) -> dict:
        p = self.base_port
        return {"slurmctld": p, "slurmdbd": p + 1, "mariadb": p + 2,
                "slurmd": [p + 10 + i for i in range(self.nodes)]}

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}

    def render_configs(self, db_password: str) -> dict[str, str]:
        return conf.render(root=self.root, cluster_name=self.cluster_name,
                           nodes=self.node_names, cpus_per_node=self.cpus_per_node,
                           gpus_per_node=self.gpus_per_node, partition=self.partition,
                           ports=self.ports, munge_socket=self.munge_socket,
                           db_password=db_password, max_time=self.max_time,
                           kinds=self.kinds, extra_partitions=self.extra_partitions)

    # ---- lifecycle -------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> None:
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            raise ClusterError(f"{', '.join(missing)} not found: run env/install-system.sh")
        self._prepare()
        hosts.add(self.node_names, self.root)
        self._start_munge()
        self._start_mariadb()
        self._start("slurmdbd", ["slurmdbd"])  # reads slurmdbd.conf beside $SLURM_CONF
        accounting.register_cluster(self.cluster_name, self.env(),
                                    self.root / "state" / "cluster-registered")
        self._start("slurmctld", ["slurmctld"])
        for node in self.node_names:
            self.start_slurmd(node)
        exposed = self.exposed()
        if exposed:  # e.g. the host name resolves to a LAN address: refuse to stay up
            self.down()
            raise ClusterError(f"daemons listen beyond loopback ({', '.join(exposed)}); map "
                               "this host's name to 127.0.1.1 in /etc/hosts and retry")
        self.wait_idle(timeout)

    def start_slurmd(self, node: str) -> None:
        """Start `node`'s slurmd, if it is not running (also after it was killed: the node
        comes back, and its stale job steps are cleaned up by Slurm)."""
        self._start(f"slurmd.{node}", ["slurmd", "-N", node])

    def exposed(self) -> list[str]:
        """'daemon address:port' for every listening socket of this cluster's daemons that
        is not on a loopback address (empty when locked down, as it must be)."""
        return [f"{name} {addr}:{port}" for name, pid in self.running().items() if pid
                for addr, port in daemons.listening(pid) if not daemons.is_loopback(addr)]

    def down(self) -> list[str]:
        """Stop this cluster's daemons (each identified, not just named by a pid file) and
        remove its /etc/hosts line; the names of the daemons stopped."""
        stopped = []
        for name in [f"slurmd.{n}" for n in self.node_names] + list(reversed(DAEMONS)):
            pid = self._pid(name)
            if pid is not None:
                daemons.terminate(pid)
                stopped.append(name)
            self.pid_file(name).unlink(missing_ok=True)
        hosts.remove(self.root)
        shutil.rmtree(self.munge_socket.parent, ignore_errors=True)
        return stopped

    def running(self) -> dict[str, int | None]:
        names = list(DAEMONS) + [f"slurmd.{n}" for n in self.node_names]
        return {name: self._pid(name) for name in names}

    def is_up(self) -> bool:
        return self.slurm_conf.exists() and all(p is not None for p in self.running().values())

    def sinfo(self) -> str:
        return self._run(["sinfo", "-N", "-o", "%N %P %T %c %G"]).stdout

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            res = self._run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
            states = res.stdout.strip()
            # one line per node and partition: a node in two partitions is listed twice
            nodes = dict(ln.split()[:2] for ln in states.splitlines() if ln.strip())
            if len(nodes) == self.nodes and all(s in ("idle", "mixed", "allocated")
                                                for s in nodes.values()):
                return
            time.sleep(0.2)
        raise ClusterError(f"nodes not idle after {timeout:.0f} s: {states!r}; "
                           f"see {self.root / 'log'}")

    # ---- internals -------------------------------------------------------------------------
    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("etc", "run", "log", "state", "spool", "tmp", "dev", "munge", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for node in self.node_names:
            (self.root / "tmp" / node).mkdir(exist_ok=True)
            (self.root / "spool" / node).mkdir(exist_ok=True)
        for i in range(self.gpus_per_node):
            gpu = self.root / "dev" / f"gpu{i}"
            if not gpu.is_symlink():
                gpu.symlink_to("/dev/null")
        for name, text in self.render_configs(accounting.password(self.root)).items():
            path = self.root / "etc" / name
            if not path.exists() or path.read_text() != text:
                daemons.write_private(path, text)  # slurmdbd refuses a conf others can read

    def _start_munge(self) -> None:
        """munged without --force: it checks the key and directories itself and refuses
        insecure ones. Key 0400 in a 0700 directory; the socket in its own 0755 directory
        (clients must reach it; munged insists that every directory above it is
        searchable by all)."""
        mdir = self.root / "munge"
        os.chmod(mdir, 0o700)
        self.munge_socket.parent.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.munge_socket.parent, 0o755)
        key = mdir / "munge.key"
        if not key.exists():
            self._run(["mungekey", "--create", f"--keyfile={key}"])
        os.chmod(key, 0o400)
        if self._pid("munged") is None:
            self.munge_socket.unlink(missing_ok=True)  # a stale socket of a dead munged
            Path(f"{self.munge_socket}.lock").unlink(missing_ok=True)
        self._start("munged", [
            "munged", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={self.pid_file('munged')}", f"--log-file={self.root / 'log/munged.log'}",
            f"--seed-file={mdir / 'munged.seed'}"], wait_for=self.munge_socket)

    def _start_mariadb(self) -> None:
        datadir = self.root / "db" / "data"
        sock = self.root / "db" / "mysqld.sock"
        fresh = not (datadir / "mysql").exists()
        if fresh:
            accounting.init_datadir(datadir)
        self._start("mariadbd", [
            "mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}",
            f"--socket={sock}", f"--port={self.ports['mariadb']}", "--bind-address=127.0.0.1",
            f"--pid-file={self.pid_file('mariadbd')}",
            f"--log-error={self.root / 'log/mariadb.log'}", "--skip-name-resolve",
        ], foreground=True, wait_for=sock)
        if fresh:
            accounting.create_slurm_user(sock, accounting.password(self.root))

    def _start(self, name: str, argv: list[str], *, foreground: bool = False,
               wait_for: Path | None = None) -> None:
        if self._pid(name) is not None:
            return
        daemons.start(name, argv, self.env(), self.root / "log", self.pid_file(name),
                      lambda: self._pid(name) is not None, foreground=foreground,
                      wait_for=wait_for)

    def _pid(self, name: str) -> int | None:
        """The pid of this cluster's daemon `name`, if it is running (identified)."""
        pid = daemons.read_pid(self.pid_file(name))
        program = name.split(".")[0]
        return pid if pid is not None and daemons.identify(pid, program, self.root) else None

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:3])} failed: {res.stderr.strip() or res.stdout}")
        return res
