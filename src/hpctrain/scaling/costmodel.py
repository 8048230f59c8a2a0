"""A data-parallel training step from its mechanisms, simulated event by event. Pure functions;
`hpctrain project` and the check against published figures (published.py) feed them.

One step of N ranks (Horovod over NCCL or MPI), as it happens:

1. **Compute.** The forward pass, then the backward pass layer by layer, last layer first;
   each layer's gradient is ready when its share of the backward pass (by its FLOPs, from
   the model's layer profile) is done. One GPU's step time comes from its published or
   measured throughput at its batch.
2. **Waiting for the slowest rank.** Every collective starts only when all ranks have
   submitted the tensor, so each step runs at the pace of the slowest of N ranks. A rank's
   step time varies from step to step (coefficient of variation `jitter`); the slowest of N
   is later by the expected maximum of N standard normal deviates times that spread
   (by numerical integration), which is 0 at one rank, 1.42 at 8, 3.04 at 512.
3. **Negotiation.** Horovod's background thread wakes every `cycle` (HOROVOD_CYCLE_TIME), and
   the ranks agree on which tensors all of them have ready: with the response cache one
   small allreduce of a bit vector (log2 N message latencies); without it, a gather to the
   coordinator and a broadcast back (twice that).
4. **Tensor fusion.** The tensors agreed on in one cycle are packed, in the order they became
   ready, into buffers of at most `fusion` bytes (HOROVOD_FUSION_THRESHOLD), each reduced
   as one allreduce; fp16 compression halves the bytes. The background thread only
   enqueues each buffer's allreduce on a GPU stream and leaves the wait for it to a
   finalizer thread (so in every Horovod release from 0.9 to 0.28, by its source): a slow
   allreduce delays the buffers queued behind it, not the cycles, which keep fusing what
   became ready in their own window.
5. **Allreduce by algorithm**, one buffer after another on one stream, with latency and
   bandwidth terms, links within a node and between nodes separate (g ranks per node,
   M nodes, n bytes; B, a: a node's network bandwidth and latency; b, c: within a node):

       ring (NCCL, N ranks):         2(N-1)/N n / min(B, b)       + 2(N-1) a
       tree (NCCL >= 2.4 across nodes, a chain within each):
                                     max(2(M-1)/M n / B, 2(g-1)/g n / b) + 2 (log2 M a + (g-1) c)
       hierarchical (Horovod's HOROVOD_HIERARCHICAL_ALLREDUCE: reduce-scatter within the node,
                     allreduce across nodes, allgather within):
                                     2(g-1)/g n / b + 2(M-1)/M n / B + 2(g-1) c + 2(M-1) a
       auto: within one node the ring; across nodes the faster of ring and tree (what NCCL
             2.4+ picks per message size).

   Within one node every algorithm is the ring over the node's links (Thakur, Rabenseifner
   & Gropp 2005; Patarasuk & Yuan 2009 for the ring's bandwidth term).
6. **Contention.** An allreduce running alongside the backward pass takes memory bandwidth,
   SMs and the PCIe bus from it: the backward pass is longer by `contention` times the
   allreduce time beside it (solved to the fixed point, as a longer backward pass moves the
   allreduces too).
7. **The step ends** when both the slowest rank's backward pass and the last allreduce have
   ended; what the allreduces add beyond the backward pass is the exposed time. Overlap is
   not a constant: it is whatever this timeline gives. The cycle's phase against the step
   is unknown, so the step is averaged over evenly spaced phases.

Efficiency = one GPU's step / the N-rank step (images/s(N) / (N x images/s(1)) at a fixed
per-rank batch). Every constant is a hardware figure (bandwidth, latency), a Horovod
setting, or fitted on a
declared calibration set of published figures (published.py): `jitter`, `contention` and the
network's delivered share of its nominal bandwidth (or the bandwidth measured on the user's
own cluster).
"""

from __future__ import annotations

import functools
import math
import re
import statistics
from dataclasses import dataclass, field

from hpctrain.environment import JobEnvironment

GB = 1e9
ALGORITHMS = ("auto", "ring", "tree", "hierarchical")
COMPRESSIONS = ("none", "fp16")
PHASES = 8  # cycle phases the step is averaged over


@dataclass(frozen=True)
class Network:
    bandwidth: float  # bytes/s a node's network delivers to an allreduce
    latency: float = 10e-6  # s per message between nodes
    intra_bandwidth: float = 100 * GB  # bytes/s within a node (NVLink: NCCL's bus bandwidth)
    intra_latency: float = 3e-6  # s per message within a node


@dataclass(frozen=True)
class Workload:
    """One rank's step: `compute_s` for its batch (forward + backward + update), the gradient
    bytes, and the layers in backward order as (gradient bytes, share of backward time);
    without them the gradients are spread evenly over the backward pass."""

    compute_s: float
    gradient_bytes: float
    batch_per_rank: int
    backward_share: float = 2.0 / 3.0  # of compute: backward is ~2x the forward pass
    layers: tuple[tuple[float, float], ...] = field(default=())

    def backward_layers(self) -> tuple[tuple[float, float], ...]:
        if self.layers:
            total_b = sum(b for b, _ in self.layers) or 1.0
            total_t = sum(t for _, t in self.layers) or 1.0
            # rescale to this workload's gradient bytes and backward time
            return tuple((b * self.gradient_bytes / total_b, t / total_t)
                         for b, t in self.layers)
        n = 50
        return tuple((self.gradient_bytes / n, 1.0 / n) for _ in range(n))


@dataclass(frozen=True)
class Horovod:
    """How the ranks communicate: Horovod's settings and NCCL's algorithm, and how much one
    rank's step time varies from step to step."""

    fusion_bytes: float = JobEnvironment.HOROVOD_FUSION_BYTES  # HOROVOD_FUSION_THRESHOLD
    cycle_s: float = JobEnvironment.HOROVOD_CYCLE_MS / 1e3  # HOROVOD_CYCLE_TIME
    algorithm: str = "auto"  # ALGORITHMS
    compression: str = "none"  # COMPRESSIONS: fp16 halves the bytes on the wire
    response_cache: bool = True  # Horovod >= 0.16
    jitter: float = 0.0  # coefficient of variation of one rank's step time
    contention: float = 0.0  # compute lost per second of allreduce running alongside it

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {self.algorithm!r}: choose from {', '.join(ALGORITHMS)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression {self.compression!r}: choose from "
                             f"{', '.join(COMPRESSIONS)}")
        if self.fusion_bytes <= 0 or self.cycle_s < 0 or self.jitter < 0 or \
                not 0 <= self.contention < 1:
            raise ValueError("fusion must be > 0, cycle and jitter >= 0, contention in [0, 1)")


@functools.cache
def expected_max_normal(n: int) -> float:
    """E[max of n standard normal deviates] = the integral of x n phi(x) Phi(x)^(n-1) dx,
    by the trapezoid rule over [-9, 9] (error < 1e-6): 0 for n = 1."""
    if n <= 1:
        return 0.0
    unit = statistics.NormalDist()
    step = 18.0 / 4000
    xs = [-9.0 + i * step for i in range(4001)]
    ys = [x * n * unit.pdf(x) * unit.cdf(x) ** (n - 1) for x in xs]
    return step * (sum(ys) - 0.5 * (ys[0] + ys[-1]))


def _ring(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


@functools.lru_cache(maxsize=1 << 16)  # a fit asks for the same buffers again and again
def allreduce_s(nbytes: float, ranks: int, per_node: int, net: Network,
                algorithm: str = "auto") -> float:
    """One allreduce of `nbytes` over `ranks`, `per_node` of them in each node."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    g = min(ranks, per_node)
    nodes = math.ceil(ranks / per_node)
    if nodes == 1:
        return _ring(nbytes, ranks, net.intra_bandwidth, net.intra_latency)
    ring = _ring(nbytes, ranks, min(net.bandwidth, net.intra_bandwidth),
                 max(net.latency, net.intra_latency))
    tree = max(2 * (nodes - 1) / nodes * nbytes / net.bandwidth,
               2 * (g - 1) / g * nbytes / net.intra_bandwidth) + \
        2 * (math.ceil(math.log2(nodes)) * net.latency + (g - 1) * net.intra_latency)
    hierarchical = 2 * (g - 1) / g * nbytes / net.intra_bandwidth + \
        _ring(nbytes, nodes, net.bandwidth, net.latency) + 2 * (g - 1) * net.intra_latency
    return {"ring": ring, "tree": tree, "hierarchical": hierarchical,
            "auto": min(ring, tree)}[algorithm]


def negotiation_s(ranks: int, per_node: int, net: Network, response_cache: bool) -> float:
    """The ranks agreeing, once a cycle, on which tensors all have ready."""
    if ranks <= 1:
        return 0.0
    latency = net.latency if ranks > per_node else net.intra_latency
    rounds = math.ceil(math.log2(ranks))
    return (1 if response_cache else 2) * rounds * latency


def simulate(w: Workload, ranks: int, per_node: int, net: Network, hvd: Horovod) -> dict:
    """One step's timeline at `ranks`, averaged over the cycle's phase: step, exposed and
    allreduce seconds, fused buffers."""
    if ranks <= 1:
        return {"step_s": w.compute_s, "compute_s": w.compute_s, "straggle_s": 0.0,
                "contention_s": 0.0,
                "allreduce_s": 0.0, "exposed_s": 0.0, "negotiation_s": 0.0,
                "fused_buffers": 0}
    stretch = 1.0 + hvd.jitter * expected_max_normal(ranks)
    forward = w.compute_s * (1.0 - w.backward_share)
    wire = 0.5 if hvd.compression == "fp16" else 1.0
    agree = negotiation_s(ranks, per_node, net, hvd.response_cache)
    beside = 0.0  # allreduce time running alongside the backward pass
    for _ in range(4 if hvd.contention else 1):  # to the fixed point: slower compute
        backward = w.compute_s * w.backward_share + hvd.contention * beside  # moves the
        ready, t = [], forward                                                # ready times
        for nbytes, share in w.backward_layers():
            t += share * backward
            ready.append((t * stretch, nbytes * wire))
        compute_end = (forward + backward) * stretch
        runs = [_one_phase(ready, forward * stretch, compute_end, k / PHASES, ranks, per_node,
                           net, hvd, agree) for k in range(PHASES)]
        beside = statistics.fmean(r[3] for r in runs)
    step = statistics.fmean(r[0] for r in runs)
    slower = (backward - w.compute_s * w.backward_share) * stretch
    return {"step_s": step, "compute_s": w.compute_s, "contention_s": slower,
            "straggle_s": compute_end - w.compute_s - slower,
            "allreduce_s": statistics.fmean(r[1] for r in runs),
            "exposed_s": step - compute_end, "negotiation_s": agree,
            "fused_buffers": round(statistics.fmean(r[2] for r in runs))}


def _one_phase(ready: list[tuple[float, float]], backward_start: float, compute_end: float,
               phase: float, ranks: int, per_node: int, net: Network, hvd: Horovod,
               agree: float) -> tuple[float, float, int, float]:
    """(step end, allreduce seconds, buffers, allreduce seconds alongside the backward pass)
    with the cycle's ticks at (phase + k) x cycle."""
    cycle = hvd.cycle_s

    def tick_at_or_after(x: float) -> float:
        if cycle <= 0:
            return x
        return (math.ceil(x / cycle - phase - 1e-12) + phase) * cycle

    free, total, buffers, beside, i = 0.0, 0.0, 0, 0.0, 0
    while i < len(ready):
        tick = tick_at_or_after(ready[i][0])
        j = i
        while j < len(ready) and ready[j][0] <= tick + 1e-12:
            j += 1
        fused = 0.0
        for k in range(i, j + 1):  # pack in ready order; a buffer holds at least one tensor
            if k == j or (fused and fused + ready[k][1] > hvd.fusion_bytes):
                took = allreduce_s(fused, ranks, per_node, net, hvd.algorithm)
                start = max(free, tick + agree)
                free = start + took
                beside += max(0.0, min(free, compute_end) - max(start, backward_start))
                total, buffers, fused = total + took, buffers + 1, 0.0
            if k < j:
                fused += ready[k][1]
        i = j
    return max(compute_end, free), total, buffers, beside


def project(w: Workload, gpus: int, per_node: int, net: Network, hvd: Horovod) -> dict:
    """Step time, throughput and efficiency (vs one rank's step) at `gpus` ranks."""
    s = simulate(w, gpus, per_node, net, hvd)
    return {**s, "gpus": gpus, "nodes": math.ceil(gpus / per_node),
            "images_per_s": gpus * w.batch_per_rank / s["step_s"],
            "efficiency": w.compute_s / s["step_s"]}


_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_bandwidth(text: str) -> float:
    """'25Gb/s', '100 Gbit/s', '12.5GB/s', '400Mb/s' -> bytes/s (b = bit, B = byte)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)\s*(b|bit|B|byte)s?\s*(/s|ps)?\s*", text)
    if not m:
        raise ValueError(f"bandwidth {text!r}: write e.g. 25Gb/s (bits) or 12.5GB/s (bytes)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return value / 8 if m.group(3) in ("b", "bit") else value


def parse_seconds(text: str) -> float:
    """'10us', '5 µs', '1ms', '0.002s' -> seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|µs|ms|s|ns)\s*", text)
    if not m:
        raise ValueError(f"time {text!r}: write e.g. 10us, 1ms or 0.002s")
    return float(m.group(1)) * {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3,
                                "s": 1.0}[m.group(2)]
