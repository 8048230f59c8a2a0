"""Copy what one node's ranks read to node-local storage, before training starts.

    scratch="$TMPDIR/hpctrain-$SLURM_JOB_ID"                # what train.sbatch runs:
    srun --ntasks-per-node=1 hpctrain stage local-copy --config C --dest "$scratch" \\
         --ranks-per-node 4                                 # one copy task per node
    srun ... hpctrain train --config C data="$scratch/{node}/imagenet-256"

The ranks of node i are i*T .. i*T+T-1 (Slurm's block distribution, as with --ntasks-per-node,
mpirun --map-by ppr:T:node and horovodrun -H a:T,b:T). For a shard directory only the shards
those ranks read (train and test, with the config's limits) are copied, each checked against
the manifest's sha256 while it is copied, under a temporary name and renamed; the copied
manifest lists the subset. A single HDF5 file is copied whole. The copy lands in
DEST/<node name>/, so nodes that share a disk (the embedded cluster) keep separate copies,
and the ranks find theirs through `{node}` in the data path.

At the end of the job each node removes its own copy. A node that died mid-job never does:
the next local copy on that node (any later job) first removes the copies there whose job no
longer runs on it (`remove_stale`); a requeued job makes its copies again on its new nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from hpctrain.atomic import atomic_path, write_json
from hpctrain.data.layout import split_pieces
from hpctrain.data.reader import rank_pieces
from hpctrain.data.shards import MANIFEST, load_manifest
from hpctrain.validation import StagingError


def files_for_ranks(data: str, ranks: range, size: int, limits: dict[str, int]) -> list[str]:
    """Names of the files in `data` (a shard directory) that `ranks` of `size` read."""
    names: set[str] = set()
    for split in ("train", "test"):
        pieces = split_pieces(data, split)
        for rank in ranks:
            mine, _ = rank_pieces(pieces, rank, size, limits.get(split, 0))
            names.update(Path(p.path).name for p in mine)
    return sorted(names)


COPY_PREFIX = "hpctrain-"  # the job script's copy: <scratch>/hpctrain-<job id>/<node>/


def job_runs_on(job_id: str, node: str) -> bool:
    """Whether Slurm has job `job_id` running on `node`; True when Slurm cannot say (an
    unreachable controller must never make a running job's data look stale)."""
    res = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %N"], capture_output=True,
                         text=True, timeout=60)
    if res.returncode != 0:
        return "Invalid job id" not in res.stderr
    for line in res.stdout.splitlines():
        state, _, nodes = line.partition(" ")
        if state in ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED"):
            hosts = subprocess.run(["scontrol", "show", "hostnames", nodes],
                                   capture_output=True, text=True, timeout=60)
            if hosts.returncode != 0 or node in hosts.stdout.split():
                return True
    return False


def remove_stale(base: Path, node: str, keep: Path,
                 runs_here: Callable[[str, str], bool] = job_runs_on, log=print) -> list[Path]:
    """Remove `node`'s copies under `base` (<base>/hpctrain-<job>/<node>) whose job no longer
    runs on it, except `keep`; the paths removed."""
    removed = []
    for job_dir in sorted(base.glob(f"{COPY_PREFIX}*")):
        mine, job = job_dir / node, job_dir.name[len(COPY_PREFIX):]
        if job_dir == keep or not mine.is_dir() or runs_here(job, node):
            continue
        size = sum(f.stat().st_size for f in mine.rglob("*") if f.is_file())
        shutil.rmtree(mine)
        with contextlib.suppress(OSError):  # the job's directory, once no copy is left
            job_dir.rmdir()
        removed.append(mine)
        log(f"{node}: removed {mine}, left by job {job} that no longer runs here "
            f"({size / 1e6:.0f} MB)")
    return removed


def copy_verified(src: Path, dest: Path, sha256: str | None, block: int = 16 << 20) -> int:
    """Copy `src` to `dest` (temporary name, then rename), hashing what was read; a mismatch
    with `sha256` leaves nothing at `dest`. Returns the bytes copied."""
    h = hashlib.sha256()
    copied = 0
    with atomic_path(dest) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(block):
            h.update(chunk)
            fout.write(chunk)
            copied += len(chunk)
        if sha256 and h.hexdigest() != sha256:
            raise StagingError(f"{src}: sha256 {h.hexdigest()[:12]}... differs from the "
                               f"manifest's {sha256[:12]}... (changed or corrupt)")
    return copied


def copy_for_node(data: str, dest_root: str, node_name: str, node_index: int, nodes: int,
                  ranks_per_node: int, limits: dict[str, int], log=print) -> Path:
    """Copy what node `node_index`'s ranks read into DEST_ROOT/<node_name>/<name of data>;
    returns that path (what `{node}` in the data path resolves to on this node)."""
    src = Path(data)
    dest = Path(dest_root) / node_name / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    free = shutil.disk_usage(dest.parent).free
    if src.is_file():
        need = src.stat().st_size
        if need > free:
            raise StagingError(f"{dest.parent}: {free / 1e9:.1f} GB free, the data needs "
                               f"{need / 1e9:.1f} GB")
        copied, files = copy_verified(src, dest, None), 1
    else:
        manifest = load_manifest(src)
        ranks = range(node_index * ranks_per_node, (node_index + 1) * ranks_per_node)
        names = files_for_ranks(str(src), ranks, nodes * ranks_per_node, limits)
        listed = {s["file"]: s for split in manifest["splits"].values() for s in split["shards"]}
        need = sum(listed[n]["bytes"] for n in names)
        if need > free:
            raise StagingError(f"{dest.parent}: {free / 1e9:.1f} GB free, this node's "
                               f"{len(names)} shards need {need / 1e9:.1f} GB")
        dest.mkdir(exist_ok=True)
        copied = 0
        for name in names:
            target = dest / name
            if target.is_file() and target.stat().st_size == listed[name]["bytes"]:
                continue  # copied before on this node (a requeued job)
            copied += copy_verified(src / name, target, listed[name]["sha256"])
        write_json(dest / MANIFEST, {**manifest, "node_local_subset": names,
                                     "copied_from": str(src.resolve())})
        files = len(names)
    seconds = time.monotonic() - start
    log(f"{node_name}: {files} file(s) of {src} at {dest} ({copied / 1e9:.2f} GB copied in "
        f"{seconds:.1f} s, {copied / 1e6 / max(seconds, 1e-9):.0f} MB/s)")
    return dest

