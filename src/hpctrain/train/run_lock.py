"""One writer per run directory: rank 0 of `hpctrain train` holds an exclusive lock on
`<run dir>/.lock` for as long as its process lives, and writes who it is into the file. A
second run pointed at the same directory (a resume typed while the job still runs, two
interactive sessions) is refused with one line naming the holder, before TensorFlow loads.

The lock is the kernel's (`flock`): it goes away with the process, however the process ends,
so a crashed or killed run never leaves its directory locked. On a file system without
cluster-wide locks (some NFS and Lustre mounts) it holds per node; where the file system
refuses locks altogether, the run goes on without one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

from hpctrain.environment import JobEnvironment
from hpctrain.validation import InputError

LOCK = ".lock"
_held: list[int] = []  # the open descriptor: closing it would release the lock


class RunInUse(InputError):
    pass


def holder(run_dir: Path) -> str:
    """Who holds (or last held) the run directory's lock, in a few words."""
    try:
        who = json.loads((run_dir / LOCK).read_text())
    except (OSError, ValueError):
        return "another process"
    job = f", Slurm job {who['job_id']}" if who.get("job_id") else ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who.get("since", 0)))
    return f"pid {who.get('pid')} on {who.get('host')}{job}, since {since}"


def hold(run_dir: Path, env: JobEnvironment) -> bool:
    """Take the run directory's lock for the rest of this process; False where the file
    system offers no locks. Raises RunInUse when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise RunInUse(f"{run_dir} is in use by {holder(run_dir)}: wait for that run to "
                           "end, or choose another --run-dir") from None
        return False  # ENOLCK, EOPNOTSUPP: no locks on this file system
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                             "node": env.node_name, "job_id": env.job_id,
                             "since": round(time.time())}).encode())
    _held.append(fd)
    return True
