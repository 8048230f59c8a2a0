"""A cluster's allreduce as NVIDIA's nccl-tests measured it: `all_reduce_perf` output files
read into the same allreduce.json `hpctrain bench allreduce` writes, so that `hpctrain project
--network` can start from a measurement a site has already made (or can make without
Horovod):

    srun -N 2 --ntasks-per-node 8 --gpus-per-node 8 all_reduce_perf -b 8 -e 256M -f 2 -g 1 \\
        > nccl-2nodes.txt
    hpctrain bench allreduce --from-nccl-tests nccl-1node.txt nccl-2nodes.txt --out DIR

Each file is one run: its `#  Rank N ... on HOST device D [..] GPU` lines give the ranks,
the hosts (the nodes) and the GPUs; its rows give, per message size, the out-of-place time
and bandwidths. Both layouts are read (before and after nccl-tests 2.10: `Group` in the rank
lines, a `root` column, `#wrong` instead of `error`), and lines prefixed by the launcher
(`0: ` from srun --label, `[1,0]<stdout>:` from mpirun --tag-output). What is read is checked
against itself: algbw must be size / time and busbw / algbw must be an allreduce's
2 (n - 1) / n - another collective's output (reduce_scatter_perf: (n - 1) / n) is refused.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from hpctrain.scaling import network

RANK = re.compile(r"#\s+Rank\s+(\d+)\s+(?:Group\s+\d+\s+)?Pid\s+\d+\s+on\s+(\S+)\s+device\s+"
                  r"(\d+)\s+\[[^\]]*\]\s+(.+?)\s*$")
# size count type redop [root] | time algbw busbw wrong (out-of-place) [| the same, in-place]
ROW = re.compile(r"(?:^|[\s:])(\d+)\s+(\d+)\s+([a-z][a-z0-9_]*)\s+([a-z]+)\s+(?:(-?\d+)\s+)?"
                 r"([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)(?:\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\S+)?\s*$")
VERSION = re.compile(r"# nccl-tests version (\S+)")


class NcclTestsError(network.MeasurementError):
    """A file that is not a usable all_reduce_perf output."""


def _wrong(token: str) -> int | None:
    """The #wrong column (a count; N/A where not validated), or the old `error` column (the
    largest relative error: wrong above 1e-3 counted as one size wrong)."""
    if token.isdigit():
        return int(token)
    try:
        return 0 if float(token) < 1e-3 else 1
    except ValueError:
        return None  # N/A: not validated (-c 0)


def parse(text: str, name: str = "nccl-tests output") -> dict:
    """One all_reduce_perf run as a benchmark point: nodes, ranks, hosts, GPUs and, per
    size, the out-of-place time as nccl-tests reports it (by default the mean over ranks)
    with algbw and busbw in bytes/s. NcclTestsError names what is missing or inconsistent."""
    ranks: dict[int, tuple[str, str]] = {}
    rows, version = [], None
    for line in text.splitlines():
        if (m := RANK.search(line)):
            ranks[int(m[1])] = (m[2], m[4])
        elif (v := VERSION.search(line)):
            version = v[1]
        elif "#" not in line and (r := ROW.search(line)):
            rows.append(r)
    if not ranks:
        raise NcclTestsError(f"{name}: no '#  Rank N ... on HOST device ...' lines: not "
                             "nccl-tests output, or cut before its header")
    if not rows:
        raise NcclTestsError(f"{name}: no result rows (size count type redop ... busbw)")
    n = len(ranks)
    if n < 2:
        raise NcclTestsError(f"{name}: one rank moves nothing: measure 2 or more")
    sizes = []
    for r in rows:
        if r[4] not in ("sum", "avg"):
            raise NcclTestsError(f"{name}: reduction '{r[4]}', not an allreduce's sum: run "
                                 "all_reduce_perf")
        nbytes, seconds = int(r[1]), float(r[6]) * 1e-6
        alg, bus = network.bandwidths(nbytes, seconds, n)
        printed_alg, printed_bus = float(r[7]) * 1e9, float(r[8]) * 1e9
        # the printed figures carry two decimals of GB/s: compare where they can be compared
        if abs(printed_alg - alg) > 0.011e9 + 0.01 * alg:
            raise NcclTestsError(f"{name}: at {nbytes} bytes algbw {r[7]} GB/s is not size / "
                                 f"time ({alg / 1e9:.2f} GB/s): not an all_reduce_perf row")
        if printed_alg >= 1e9 and abs(printed_bus / printed_alg - network.bus_factor(n)) \
                > 0.02 * network.bus_factor(n):
            raise NcclTestsError(
                f"{name}: at {nbytes} bytes busbw / algbw is {printed_bus / printed_alg:.3f}, "
                f"an allreduce's on {n} ranks is {network.bus_factor(n):.3f}: another "
                "collective's output (run all_reduce_perf)")
        sizes.append({"bytes": nbytes, "count": int(r[2]), "time_s": seconds, "algbw": alg,
                      "busbw": bus, "wrong": _wrong(r[9]), "type": r[3]})
    hosts = sorted({host for host, _ in ranks.values()})
    return {"nodes": len(hosts), "ranks": n, "node_names": hosts,
            "gpus": sorted({gpu for _, gpu in ranks.values()}), "nccl_tests": version,
            "sizes": sorted(sizes, key=lambda s: s["bytes"])}


def benchmark(files: list[Path]) -> dict:
    """allreduce.json's content from several all_reduce_perf outputs (one per node count),
    their points ordered by nodes and ranks."""
    if not files:
        raise NcclTestsError("no nccl-tests output given")
    points = []
    for f in files:
        try:
            text = Path(f).read_text(errors="replace")
        except OSError as e:
            raise NcclTestsError(f"{f}: cannot be read ({e.strerror})") from None
        points.append({**parse(text, str(f)), "file": str(f)})
    points.sort(key=lambda p: (p["nodes"], p["ranks"]))
    far = points[-1]
    return {"kind": network.KIND, "source": "nccl-tests",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "hpctrain bench allreduce --from-nccl-tests "
                       + " ".join(str(f) for f in files),
            "job": {"job_id": None, "ranks": far["ranks"], "nodes": far["nodes"],
                    "node_names": far["node_names"],
                    "hosts": sorted({h for p in points for h in p["node_names"]})},
            "gpus": sorted({g for p in points for g in p["gpus"]}),
            "dtype": ", ".join(sorted({s["type"] for p in points for s in p["sizes"]})),
            "points": points}
