"""The accounting store of the embedded cluster: a private MariaDB (data directory under the
cluster's root, socket and 127.0.0.1 only) with a `slurm` user for slurmdbd, and the
cluster's registration in it.

The password is generated per install (`secrets`), kept in a 0600 file and in the 0600
slurmdbd.conf, and reaches MariaDB on the client's standard input, never on a command line
(where `ps` and /proc/*/cmdline would show it to every user).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path

from hpctrain.cluster.daemons import ClusterError, write_private


def password(root: Path) -> str:
    """This install's database password, created on first use."""
    path = root / "db" / "password"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def init_datadir(datadir: Path) -> None:
    shutil.rmtree(datadir, ignore_errors=True)
    res = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root",
                          f"--datadir={datadir}", "--auth-root-authentication-method=socket",
                          "--skip-test-db"], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise ClusterError(f"mariadb-install-db failed: {' '.join(res.stderr.split())[-300:]}")


def create_slurm_user(socket_path: Path, pw: str, timeout: float = 30.0) -> None:
    """CREATE USER slurm ... with the SQL on stdin; retried while MariaDB starts."""
    quoted = pw.replace("\\", "\\\\").replace("'", "\\'")
    sql = (f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{quoted}';\n"
           "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\nFLUSH PRIVILEGES;\n")
    argv = ["mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot"]
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=60)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"mariadb kept failing: {' '.join(res.stderr.split())}")
        time.sleep(0.3)


def register_cluster(name: str, env: dict, marker: Path, timeout: float = 30.0) -> None:
    """Add the cluster to the accounting database (it must be there before slurmctld
    starts), once: `marker` records that it was done. Retried while slurmdbd starts."""
    if marker.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run(["sacctmgr", "-i", "add", "cluster", name], env=env,
                             capture_output=True, text=True, timeout=60)
        if res.returncode == 0 or "already exists" in res.stdout + res.stderr:
            marker.touch()
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"sacctmgr kept failing: {' '.join(res.stderr.split())}")
        time.sleep(0.3)
