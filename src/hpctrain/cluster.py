"""The embedded Slurm cluster: real slurmctld, slurmdbd (+ MariaDB) and 4 slurmd on this host.

    hpctrain cluster up        # idempotent; waits until node1..node4 are idle
    hpctrain cluster status    # sinfo, and the SLURM_CONF to export
    hpctrain cluster down      # stops every daemon by its PID file

All state lives under one directory (default `.cluster/` in the repository). This is the
default target of the demo and the tests; on a real cluster it is never needed. How each
setting was found to work is recorded in shared/notes/local-slurm.md.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from hpctrain.paths import REPO_ROOT

TEMPLATES = Path(__file__).parent / "templates"
DAEMON_ORDER = ("munged", "mariadbd", "slurmdbd", "slurmctld")  # start order; stop reversed


class ClusterError(RuntimeError):
    pass


@dataclass
class EmbeddedCluster:
    root: Path = field(default_factory=lambda: default_root())
    nodes: int = 4
    cpus_per_node: int = 2
    gpus_per_node: int = 2
    base_port: int = 17817
    partition: str = "debug"
    cluster_name: str = "hpctrain"

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    # ---- paths -------------------------------------------------------------------------
    @property
    def slurm_conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "sock" / "munge.socket"

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    def pid_file(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    @property
    def ports(self) -> dict:
        p = self.base_port
        return {
            "slurmctld": p,
            "slurmdbd": p + 1,
            "mariadb": p + 2,
            "slurmd": [p + 10 + i for i in range(self.nodes)],
            "slurmd_range": f"[{p + 10}-{p + 9 + self.nodes}]",
        }

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}

    # ---- rendering (pure) ------------------------------------------------------------------
    def render_configs(self, db_password: str) -> dict[str, str]:
        jenv = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        ctx = {
            "root": self.root,
            "host": socket.gethostname().split(".")[0],
            "cluster_name": self.cluster_name,
            "nodes": self.node_names,
            "node_range": f"node[1-{self.nodes}]",
            "cpus_per_node": self.cpus_per_node,
            "gpus_per_node": self.gpus_per_node,
            "memory_mb": 4000,
            "partition": self.partition,
            "max_time": "04:00:00",
            "ports": self.ports,
            "munge_socket": self.munge_socket,
            "db_password": db_password,
        }
        return {
            name: jenv.get_template(f"{name}.j2").render(**ctx)
            for name in ("slurm.conf", "gres.conf", "slurmdbd.conf")
        }

    # ---- lifecycle -------------------------------------------------------------------------
    def up(self, timeout: float = 60.0) -> None:
        for tool in ("munged", "mungekey", "mariadbd", "mariadb-install-db", "slurmdbd",
                     "slurmctld", "slurmd", "sinfo", "sacctmgr"):
            if not shutil.which(tool):
                raise ClusterError(f"{tool} not found: run env/install-system.sh first")
        self._prepare()
        self.resolve_node_names()
        self._start_munge()
        self._start_mariadb()
        self._start_slurmdbd()
        self._start_slurmctld()
        for node in self.node_names:
            self._start_daemon(f"slurmd.{node}", ["slurmd", "-N", node])
        self.wait_idle(timeout)

    def down(self) -> list[str]:
        stopped = []
        names = [f"slurmd.{n}" for n in self.node_names] + list(reversed(DAEMON_ORDER))
        for name in names:
            pid = self._pid(name)
            if pid is None:
                continue
            _terminate(pid)
            self.pid_file(name).unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    def running(self) -> dict[str, int | None]:
        names = list(DAEMON_ORDER) + [f"slurmd.{n}" for n in self.node_names]
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
            lines = [ln.split() for ln in states.splitlines() if ln.strip()]
            if len(lines) == self.nodes and all(s[1] in ("idle", "mixed", "allocated")
                                                for s in lines):
                return
            time.sleep(0.3)
        raise ClusterError(f"nodes not idle after {timeout:.0f} s: {states!r}; "
                           f"see {self.root / 'log'}")

    def resolve_node_names(self, hosts: Path = Path("/etc/hosts")) -> bool:
        """Make node1..nodeN resolve to this host, as real node names resolve on a cluster:
        horovodrun refuses hosts it cannot resolve. Adds one marked line, once; returns
        False if /etc/hosts cannot be written (then only the horovodrun launcher fails)."""
        marker = "# hpctrain embedded cluster"
        try:
            text = hosts.read_text()
            missing = [n for n in self.node_names if not re.search(
                rf"^127\.0\.0\.1\s.*\b{n}\b", text, re.M)]
            if missing:
                with hosts.open("a") as f:
                    f.write(("" if text.endswith("\n") else "\n")
                            + f"127.0.0.1 {' '.join(missing)} {marker}\n")
        except OSError:
            return False
        return True

    # ---- internals -------------------------------------------------------------------------
    def _prepare(self) -> None:
        for sub in ("etc", "run", "log", "state", "spool", "tmp", "dev", "munge/sock", "db"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for node in self.node_names:
            (self.root / "tmp" / node).mkdir(exist_ok=True)
            (self.root / "spool" / node).mkdir(exist_ok=True)
        for i in range(self.gpus_per_node):
            gpu = self.root / "dev" / f"gpu{i}"
            if not gpu.is_symlink():
                gpu.symlink_to("/dev/null")
        pw_file = self.root / "db" / "password"
        if not pw_file.exists():
            _write_private(pw_file, secrets.token_hex(12))
        for name, text in self.render_configs(pw_file.read_text().strip()).items():
            path = self.root / "etc" / name
            if not path.exists() or path.read_text() != text:
                _write_private(path, text)  # slurmdbd refuses a conf readable by others

    def _start_munge(self) -> None:
        mdir = self.root / "munge"
        os.chmod(mdir / "sock", 0o755)
        key = mdir / "munge.key"
        if not key.exists():
            self._run(["mungekey", "--create", f"--keyfile={key}"])
        self._start_daemon("munged", [
            "munged", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={self.pid_file('munged')}", f"--log-file={self.root / 'log/munged.log'}",
            f"--seed-file={mdir / 'munged.seed'}", "--force",
        ], wait_for=self.munge_socket)

    def _start_mariadb(self) -> None:
        datadir = self.root / "db" / "data"
        sock = self.root / "db" / "mysqld.sock"
        fresh = not (datadir / "mysql").exists()
        if fresh:
            shutil.rmtree(datadir, ignore_errors=True)
            self._run(["mariadb-install-db", "--no-defaults", "--user=root",
                       f"--datadir={datadir}", "--auth-root-authentication-method=socket",
                       "--skip-test-db"])
        self._start_daemon("mariadbd", [
            "mariadbd", "--no-defaults", "--user=root", f"--datadir={datadir}",
            f"--socket={sock}", f"--port={self.ports['mariadb']}", "--bind-address=127.0.0.1",
            f"--pid-file={self.pid_file('mariadbd')}",
            f"--log-error={self.root / 'log/mariadb.log'}", "--skip-name-resolve",
        ], foreground=True, wait_for=sock)
        if fresh:
            pw = (self.root / "db" / "password").read_text().strip()
            sql = (f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{pw}';"
                   "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
            self._retry(["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql])

    def _start_slurmdbd(self) -> None:
        # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
        self._start_daemon("slurmdbd", ["slurmdbd"])
        marker = self.root / "state" / "cluster-registered"
        if not marker.exists():
            # The cluster must exist in the accounting database before slurmctld starts.
            self._retry(["sacctmgr", "-i", "add", "cluster", self.cluster_name],
                        ok_output="already exists")
            marker.touch()

    def _start_slurmctld(self) -> None:
        self._start_daemon("slurmctld", ["slurmctld"])

    def _start_daemon(self, name: str, argv: list[str], *, foreground: bool = False,
                      wait_for: Path | None = None, timeout: float = 30.0) -> None:
        if self._pid(name) is not None:
            return
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115
        if foreground:
            proc = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            self.pid_file(name).write_text(f"{proc.pid}\n")
        else:
            res = subprocess.run(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=timeout)
            if res.returncode != 0:
                raise ClusterError(f"{name} failed to start (exit {res.returncode}); "
                                   f"see {self.root / 'log'}")
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid(name) is not None and (wait_for is None or wait_for.exists()):
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} did not come up within {timeout:.0f} s; "
                           f"see {self.root / 'log'}")

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_file(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise ClusterError(f"{' '.join(argv[:3])} failed: {res.stderr.strip() or res.stdout}")
        return res

    def _retry(self, argv: list[str], ok_output: str = "", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            res = self._run(argv, check=False)
            if res.returncode == 0 or (ok_output and ok_output in res.stdout + res.stderr):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{argv[0]} kept failing: {res.stderr.strip()}")
            time.sleep(0.5)


def default_root() -> Path:
    return Path(os.environ.get("HPCTRAIN_CLUSTER_DIR", REPO_ROOT / ".cluster"))


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (PID 1 here does not reap) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _terminate(pid: int, timeout: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
