"""node1..nodeN resolve to this host while the embedded cluster is up, as real node names
resolve on a cluster (horovodrun refuses hosts it cannot resolve).

`up` appends one line marked with the cluster's directory; `down` removes exactly the lines
with that mark, and nothing else. Each cluster adds its own line, so taking one cluster down
never breaks another that is still up. /etc/hosts is often a bind mount (containers), so it
is rewritten in place rather than replaced by a rename.
"""

from __future__ import annotations

from pathlib import Path

HOSTS = Path("/etc/hosts")


def marker(root: Path) -> str:
    return f"# hpctrain embedded cluster {root}"


def add(names: list[str], root: Path, hosts: Path = HOSTS) -> bool:
    """Add the cluster's line once; False if /etc/hosts cannot be written (then only the
    horovodrun launcher fails)."""
    mark = marker(root)
    try:
        text = hosts.read_text()
        if any(line.endswith(mark) for line in text.splitlines()):
            return True
        with hosts.open("a") as f:
            f.write(("" if text.endswith("\n") or not text else "\n")
                    + f"127.0.0.1 {' '.join(names)} {mark}\n")
    except OSError:
        return False
    return True


def remove(root: Path, hosts: Path = HOSTS) -> bool:
    """Remove the lines `add` wrote for this cluster; True if there were any."""
    mark = marker(root)
    try:
        lines = hosts.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not line.rstrip("\n").endswith(mark)]
        if len(kept) == len(lines):
            return False
        with hosts.open("w") as f:
            f.write("".join(kept))
    except OSError:
        return False
    return True
