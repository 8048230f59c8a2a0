"""`hpctrain bench allreduce`: the cluster's network as Horovod's allreduce sees it, measured
in one job, for `hpctrain project --network FILE` and for the record.

    hpctrain bench allreduce --nodes 1,2,4                  # the embedded cluster
    hpctrain bench allreduce --nodes 1,2,4,8 --ntasks-per-node 4 --gpus-per-node 4 \\
        --profile mysite --out results/network/mysite
    hpctrain project --model resnet50 --throughput 1270 --batch 256 --gpus 8,64 \\
        --gpus-per-node 4 --network results/network/mysite/allreduce.json

One job of the largest node count (one queue wait, one start of the ranks): its ranks
measure each node count in turn, the ranks of the first k nodes as a Horovod process set
while the others wait. For each message size from --min-bytes to --max-bytes, doubling
(float32, as nccl-tests' all_reduce_perf by default), every rank of the set runs --warmup
allreduces, then times --iters of them one after another; a rank's time is its mean, the
size's time the slowest rank's (the collective ends for everyone when it ends for the last
one). Every result is checked: each element must be the sum of the ranks' values, and a
wrong one fails the job. Bandwidths follow nccl-tests (scaling/network.py). Rank 0 writes
allreduce.json (every rank's mean and rank 0's samples); the command then writes README.md
and allreduce.png from it (`--render DIR` again from the JSON alone).

The time includes what Horovod adds to each collective (its background cycle,
HOROVOD_CYCLE_TIME, and the negotiation), as a training step's allreduces do. With GPUs each
rank's tensors sit on its local GPU and Horovod reduces them with NCCL where it was built
with it; that path is written to Horovod's documented API and unmeasured on this project's
CPU-only machines.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpctrain import machine
from hpctrain.atomic import write_json, write_text
from hpctrain.environment import JobEnvironment
from hpctrain.scaling import network
from hpctrain.validation import InputError

EXIT_WRONG = 3
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)(i?B)?\s*$", re.I)


def parse_bytes(text: str) -> int:
    """'8', '64K', '256M', '1GiB' -> bytes (K, M, G are powers of 1024, as nccl-tests)."""
    m = _BYTES.match(str(text))
    if not m:
        raise InputError(f"{text!r} is not a size in bytes (e.g. 8, 64K, 256M, 1GiB)")
    return int(float(m.group(1)) * 1024 ** " KMG".index((m.group(2) or " ").upper()))


def message_sizes(min_bytes: int, max_bytes: int) -> list[int]:
    """min, 2 min, 4 min, ... up to max, in bytes of whole float32 elements."""
    if min_bytes < 4 or max_bytes < min_bytes:
        raise InputError(f"message sizes {min_bytes}..{max_bytes} bytes: need 4 <= min <= max")
    sizes, size = [], min_bytes // 4 * 4
    while size <= max_bytes:
        sizes.append(size)
        size *= 2
    return sizes


def parse_nodes(text: str) -> list[int]:
    try:
        nodes = sorted({int(n) for n in str(text).split(",") if n.strip()})
    except ValueError:
        raise InputError(f"--nodes {text!r}: node counts separated by commas, e.g. 1,2,4"
                         ) from None
    if not nodes or nodes[0] < 1:
        raise InputError(f"--nodes {text!r}: node counts of 1 or more, e.g. 1,2,4")
    return nodes


@dataclass(frozen=True)
class Plan:
    nodes: tuple[int, ...]
    sizes: tuple[int, ...]
    warmup: int = 5
    iters: int = 20
    cycle_ms: float = 0.1  # HOROVOD_CYCLE_TIME while measuring

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iters < 1:
            raise InputError(f"--warmup {self.warmup} / --iters {self.iters}: need warm-up "
                             ">= 0 and 1 or more timed allreduces")
        if not 0 < self.cycle_ms <= 100:
            raise InputError(f"--cycle-ms {self.cycle_ms}: between 0 and 100 ms")

    def worker_args(self) -> tuple[str, ...]:
        return ("--nodes", ",".join(map(str, self.nodes)), "--min-bytes", str(self.sizes[0]),
                "--max-bytes", str(self.sizes[-1]), "--warmup", str(self.warmup),
                "--iters", str(self.iters), "--cycle-ms", f"{self.cycle_ms:g}")


# --- inside the job: every rank ------------------------------------------------------------

def worker(out: Path, plan: Plan) -> int:
    """Measure every node count of `plan` on this job's ranks; rank 0 writes allreduce.json.
    Exit code: 0, or EXIT_WRONG when an allreduce gave a wrong result."""
    env = JobEnvironment.detect()
    env.tune_before_init(os.environ)  # the Open MPI settings `hpctrain train` uses
    # Horovod runs a collective at its next cycle: a short one, so that the network shows
    # (a step's cycles are the cost model's to add, not the network's)
    os.environ["HOROVOD_CYCLE_TIME"] = f"{plan.cycle_ms:g}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from hpctrain.train.trainer import horovod_backend

    gpus = tf.config.list_physical_devices("GPU")
    hvd.init(process_sets="dynamic")
    if gpus:  # Horovod: one GPU per process, by local rank (unmeasured here: no GPU)
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    gathered = hvd.allgather_object((hvd.rank(), env.node_name, socket.gethostname()))
    layout = node_layout([(rank, name) for rank, name, _ in gathered])
    hosts = sorted({host for *_, host in gathered})
    sets: dict[int, Any] = {}
    points: list[dict] = []
    wrong = 0
    for n in plan.nodes:  # the first n nodes' ranks; the whole job is the global set
        ranks = sorted(r for r, node, _ in layout if node < n)
        if ranks not in [s.ranks for s in sets.values()]:
            sets[n] = (hvd.global_process_set if len(ranks) == hvd.size()
                       else hvd.add_process_set(ranks))
    for n, ps in sets.items():
        if hvd.rank() in ps.ranks:
            mine = [_time_one(tf, hvd, ps, size, plan, bool(gpus)) for size in plan.sizes]
            gathered = hvd.allgather_object(mine, process_set=ps)
            point = _point(n, ps.ranks, gathered, plan.sizes, layout)
            wrong += sum(row["wrong"] for row in point["sizes"])
            points.append(point)
        hvd.allreduce(tf.constant(0.0), name=f"hpctrain.bench.done.{n}")  # all wait for it
    if hvd.rank() == 0:
        write_json(out / "allreduce.json", {
            "kind": network.KIND, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": "hpctrain bench allreduce " + " ".join(plan.worker_args()),
            "job": {"job_id": env.job_id, "ranks": hvd.size(), "nodes": len(
                {name for *_, name in layout}), "node_names": sorted({n for *_, n in layout}),
                    "hosts": hosts},
            "machine": machine.describe(), "node": machine.node(env.node_name),
            "horovod": horovod_backend(), "dtype": "float32", "warmup": plan.warmup,
            "iters": plan.iters, "points": points})
        print(f"allreduce: {out / 'allreduce.json'}", flush=True)
    if wrong:
        print(f"allreduce: {wrong} element(s) came back wrong (see allreduce.json)",
              file=sys.stderr, flush=True)
        return EXIT_WRONG
    return 0


def node_layout(ranks: list[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """(rank, node index, node name) for every rank, nodes numbered by their lowest rank.
    By the node's Slurm name, not Horovod's cross_rank: the embedded cluster's logical
    nodes share one host, which Horovod would count as one node."""
    first: dict[str, int] = {}
    for _, name in sorted(ranks):
        first.setdefault(name, len(first))
    return [(rank, first[name], name) for rank, name in sorted(ranks)]


def _time_one(tf, hvd, ps, size: int, plan: Plan, gpu: bool) -> dict:
    """This rank's allreduces of `size` bytes in process set `ps`: mean, samples, wrong."""
    count = size // 4
    x = tf.fill([count], float(hvd.rank() + 1))
    name = f"hpctrain.bench.{len(ps.ranks)}.{size}"

    def once():
        y = hvd.allreduce(x, op=hvd.Sum, process_set=ps, name=name)
        if gpu:  # the op may return before its stream is done: wait for one element
            y[:1].numpy()
        return y

    for _ in range(plan.warmup):
        once()
    samples = []
    for _ in range(plan.iters):
        start = time.perf_counter()
        y = once()
        samples.append(time.perf_counter() - start)
    expect = float(sum(r + 1 for r in ps.ranks))
    wrong = int(tf.math.count_nonzero(tf.not_equal(y, expect)))
    return {"mean_s": statistics.fmean(samples), "samples": samples, "wrong": wrong}


def _point(nodes: int, ranks: list[int], gathered: list[list[dict]], sizes, layout) -> dict:
    rows = []
    for i, size in enumerate(sizes):
        means = [g[i]["mean_s"] for g in gathered]
        t = max(means)
        alg, bus = network.bandwidths(size, t, len(ranks))
        rows.append({"bytes": size, "count": size // 4, "time_s": t, "algbw": alg,
                     "busbw": bus, "rank_means_s": means, "wrong": sum(g[i]["wrong"]
                                                                        for g in gathered),
                     "rank0_samples_s": gathered[0][i]["samples"]})
    return {"nodes": nodes, "ranks": len(ranks),
            "node_names": sorted({layout[r][2] for r in ranks}), "sizes": rows}


# --- on the login node: submit, wait, render -----------------------------------------------

def render(out: Path) -> dict[str, Path]:
    """README.md and allreduce.png from `out`/allreduce.json alone."""
    data = network.load(out / "allreduce.json")
    here = Path.cwd().resolve()
    shown = out.resolve().relative_to(here) if out.resolve().is_relative_to(here) else out
    write_text(out / "README.md", readme(data, shown))
    return {"README.md": out / "README.md", "allreduce.png": plot(data, out / "allreduce.png")}


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def _fit(p: dict) -> network.Fit | str | None:
    """A point's fit, why it has none (a string), or None on one rank (nothing moves)."""
    if p["ranks"] < 2:
        return None
    try:
        return network.fit(p["sizes"], p["ranks"], p["nodes"])
    except network.MeasurementError as e:
        return str(e)


def _by_nccl_tests(data: dict) -> bool:
    """Read from nccl-tests' output (bench/nccl_tests.py), not measured through Horovod."""
    return data.get("source") == "nccl-tests"


def _title(data: dict) -> str:
    if _by_nccl_tests(data):
        return "Allreduce by nccl-tests (all_reduce_perf)"
    return f"Allreduce through Horovod: job {data['job']['job_id']}"


def _setup(data: dict) -> list[str]:
    """How the figures were measured, in words."""
    if _by_nccl_tests(data):
        return [f"Read {data['date']} from " + ", ".join(
                    f"`{p['file']}` ({p['nodes']} node(s), {p['ranks']} rank(s)"
                    + (f", nccl-tests {p['nccl_tests']}" if p.get("nccl_tests") else "") + ")"
                    for p in data["points"]) + f"; GPUs: {', '.join(data['gpus'])}.",
                f"{data['dtype']}; time: nccl-tests' out-of-place time per allreduce (by "
                "default its mean over the ranks: `-a`); algbw = size / time, busbw = algbw x "
                "2 (n - 1) / n. No Horovod in the loop: a projection adds Horovod's cycles and "
                "negotiation itself.", ""]
    hv, node = data["horovod"], data["node"]
    return [f"{data['date']}; {data['job']['ranks']} rank(s) on nodes "
            f"{', '.join(data['job']['node_names'])}; {machine.describe_node(node)}.",
            f"Horovod: {hv['controller']} controller, {hv['tensor_ops']} allreduce, cycle "
            f"{hv['cycle_time_ms']:g} ms, fusion {hv['fusion_threshold_bytes'] / 2**20:g} MiB. "
            f"{data['dtype']}, {data['warmup']} warm-up + {data['iters']} timed allreduces "
            "per size; time: the slowest rank's mean; algbw = size / time, busbw = algbw x "
            "2 (n - 1) / n (nccl-tests' definitions).", ""]


def readme(data: dict, out: Path) -> str:
    lines = [f"# {_title(data)}", "", *_setup(data)]
    job = data["job"]
    if len(job["hosts"]) < job["nodes"]:
        lines += [f"**These {job['nodes']} Slurm nodes run on {len(job['hosts'])} host(s) "
                  f"({', '.join(job['hosts'])}): between them the allreduce goes through the "
                  "host's memory, not a network.** The figures show the method and "
                  "Horovod's own cost, not an interconnect.", ""]
    for p in data["points"]:
        lines += [f"## {p['nodes']} node(s), {p['ranks']} rank(s): "
                  f"{', '.join(p['node_names'])}", ""]
        f = _fit(p)
        if isinstance(f, str):
            lines += [f"No fit: {f}.", ""]
        elif f is not None:
            lines += [f"Fit t = t0 + size x 2 (n - 1) / n / B: t0 {f.t0_s * 1e6:.1f} us, "
                      f"B {f.bus_bandwidth / 1e9:.3g} GB/s (worst relative error "
                      f"{100 * f.worst_error:.0f} %).", ""]
        lines += ["| size | time (us) | algbw (GB/s) | busbw (GB/s) | wrong |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {_fmt_bytes(r['bytes'])} | {r['time_s'] * 1e6:.1f} | "
                  f"{r['algbw'] / 1e9:.3f} | {r['busbw'] / 1e9:.3f} | "
                  f"{'n/a' if r['wrong'] is None else r['wrong']} |"
                  for r in p["sizes"]]
        lines.append("")
    try:
        net, _, said = network.network_from(data)
        lines += ["## For projections", "", f"{said}:", "", "```",
                  "hpctrain project --model resnet50 --throughput 1270 --batch 256 "
                  f"--network {out / 'allreduce.json'}", "```", ""]
    except network.MeasurementError as e:
        lines += ["## For projections", "", f"Not usable by `hpctrain project`: {e}.", ""]
    lines += ["![allreduce time and bus bandwidth against size](allreduce.png)", "",
              "Measured with:", "", "```", data["command"], "```", ""]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from hpctrain.scaling.plots import save_png  # matplotlib on its Agg backend

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for p in data["points"]:
        label = f"{p['nodes']} node(s), {p['ranks']} rank(s)"
        x = [r["bytes"] for r in p["sizes"]]
        left.plot(x, [r["time_s"] * 1e6 for r in p["sizes"]], marker="o", ms=3, label=label)
        if p["ranks"] >= 2:
            right.plot(x, [r["busbw"] / 1e9 for r in p["sizes"]], marker="o", ms=3, label=label)
    nccl = _by_nccl_tests(data)
    left.set(xscale="log", yscale="log", xlabel="message size (bytes)",
             ylabel="time per allreduce (us, "
             + ("as nccl-tests reports it)" if nccl else "slowest rank's mean)"),
             title="allreduce time" + ("" if nccl else " through Horovod"))
    right.set(xscale="log", xlabel="message size (bytes)", ylabel="bus bandwidth (GB/s)",
              title="bus bandwidth (algbw x 2(n-1)/n)")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.suptitle(f"{_title(data)}: {', '.join(data['gpus'])}" if nccl else
                 f"job {data['job']['job_id']}: {machine.describe_node(data['node'])}",
                 fontsize=9)
    return save_png(fig, path)


@dataclass(frozen=True)
class Measured:
    job_id: str
    out: Path
    state: str
    files: dict[str, Path]


def submit_and_wait(req, plan: Plan, out: Path, timeout: float, client=None,
                    log: Callable[[str], None] = print, dry_run: bool = False):
    """Render allreduce.sbatch for the largest node count into `out` and sbatch it (a dry
    run: only `sbatch --test-only`), wait, then render. `req`: a slurm.request.Request with
    the job options and profile (its config is not used)."""
    from hpctrain.slurm.client import SlurmClient
    from hpctrain.slurm.profiles import load_profile
    from hpctrain.slurm.request import job_spec
    from hpctrain.slurm.script import render_sbatch
    from hpctrain.slurm.submit import DryRun, create_run_dir, write_submission

    profile = load_profile(req.profile)
    spec = job_spec(req, profile, out, "allreduce.sbatch", job_name="hpctrain-allreduce",
                    extra_args=plan.worker_args())
    script = render_sbatch(spec)
    client = client or SlurmClient()
    if dry_run:
        return DryRun((("allreduce", script, client.test_only(script)),))
    create_run_dir(out, "output directory")
    write_text(out / "job.sbatch", script)
    job_id = client.sbatch(out / "job.sbatch")
    write_submission(out, client, job_id, script=str(out / "job.sbatch"))
    log(f"submitted allreduce benchmark: job {job_id} ({spec.nodes} node(s)), output {out}")
    state = client.wait(job_id, timeout, on_change=lambda j, s: log(f"job {j}: {s}"))
    files = render(out) if (out / "allreduce.json").is_file() else {}
    return Measured(job_id, out, state, files)


def summary_lines(data: dict) -> list[str]:
    """One line per node count: its ranks and, from 2 ranks, the fit."""
    lines = []
    for p in data["points"]:
        big = p["sizes"][-1]
        line = (f"{p['nodes']} node(s), {p['ranks']} rank(s): {_fmt_bytes(big['bytes'])} in "
                f"{big['time_s'] * 1e3:.2f} ms, busbw {big['busbw'] / 1e9:.3f} GB/s")
        f = _fit(p)
        if isinstance(f, network.Fit):
            line += f"; fit: t0 {f.t0_s * 1e6:.0f} us, B {f.bus_bandwidth / 1e9:.3g} GB/s"
        lines.append(line)
    return lines
