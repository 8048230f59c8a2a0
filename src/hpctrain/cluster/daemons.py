"""Starting, identifying and stopping the embedded cluster's daemons.

Each daemon writes a pid file under the cluster's `run/` directory. A pid file alone is not
trusted: pids are reused, and a stale file could name any process. Before a process is
signalled, `identify` checks that it is the expected program *and* belongs to this cluster:
its command line or its SLURM_CONF names this cluster's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ClusterError(RuntimeError):
    pass


def alive(pid: int) -> bool:
    """True for a live process; a zombie (PID 1 here may not reap) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return {}
    return dict(item.partition("=")[::2] for item in raw.split("\0") if "=" in item)


def identify(pid: int, program: str, root: Path) -> bool:
    """Is `pid` a live `program` (e.g. "slurmd") of the cluster in `root`?"""
    if not alive(pid):
        return False
    argv = _cmdline(pid)
    if not argv or os.path.basename(argv[0]) != program:
        return False
    mine = str(root)
    if any(mine in arg for arg in argv[1:]):
        return True
    return _environ(pid).get("SLURM_CONF", "").startswith(mine + os.sep)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` s; returns when the process is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def start(name: str, argv: list[str], env: dict, log_dir: Path, pid_file: Path,
          running: Callable[[], bool], *, foreground: bool = False, wait_for: Path | None = None,
          timeout: float = 30.0) -> None:
    """Start a daemon (one that forks itself, or with `foreground` one that does not, whose
    pid is then written to `pid_file`) and wait until `running()` and `wait_for` exists."""
    with open(log_dir / f"{name}.stdout", "ab") as log:
        if foreground:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            pid_file.write_text(f"{proc.pid}\n")
        else:
            res = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=timeout)
            if res.returncode != 0:
                raise ClusterError(f"{name} failed to start (exit {res.returncode}); "
                                   f"see {log_dir}/{name}.stdout and {name}.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running() and (wait_for is None or wait_for.exists()):
            return
        time.sleep(0.05)
    raise ClusterError(f"{name} did not come up within {timeout:.0f} s; see {log_dir}")


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file only its owner can read (secrets, configs slurmdbd insists on)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on."""
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def is_loopback(address: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(address.split("%")[0]).is_loopback
