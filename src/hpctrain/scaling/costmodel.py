"""A data-parallel step-time model: compute per step plus the gradient allreduce that is not
hidden behind the backward pass. Pure functions; `hpctrain project` feeds them.

Ring allreduce of n bytes over p ranks (Thakur, Rabenseifner & Gropp 2005; Patarasuk & Yuan
2009), per link bandwidth B and per-message latency a:

    t(n, p) = 2 (p - 1) / p * n / B  +  2 (p - 1) * a

Within one node the ring runs over the node's interconnect (NVLink, PCIe, shared memory);
across nodes, the ring's slowest link is the network: one ring link leaves and one enters
each node, so the node's network bandwidth bounds it.

Without overlap, step = compute + t(all gradient bytes, in fused buffers) + overhead.
Pipelined (as Horovod schedules it), the backward pass produces gradients layer by layer,
last layer first; every `cycle` Horovod fuses the gradients that are ready into buffers of
at most `fusion` bytes and allreduces them one after another while the backward pass goes
on. The step ends when both the backward pass and the last allreduce have ended; only what
sticks out is exposed. Real overlap is partial (communication and compute share the GPU's
memory bandwidth and the PCIe bus, and kernels wait for launches), so `overlap` in [0, 1]
interpolates the exposed time between the two: 0 = none, 1 = the ideal pipeline.
`overhead` is a fixed per-step cost of synchronising (negotiation, the cycle wait, launching
the reduction, a data pipeline that must keep pace), present whenever there is more than
one rank. Both constants are calibrated on one published figure each (published.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

GB = 1e9


@dataclass(frozen=True)
class Network:
    bandwidth: float  # bytes/s of the network per node (the ring's link across nodes)
    latency: float = 10e-6  # s per message step across nodes
    intra_bandwidth: float = 100 * GB  # bytes/s within a node (NVLink: ~100-230 GB/s busbw)
    intra_latency: float = 3e-6


@dataclass(frozen=True)
class Workload:
    """One rank's step: `compute_s` for its batch (forward + backward), the gradient bytes,
    and optionally the layers in backward order as (gradient bytes, share of backward
    time); without them the gradients are spread evenly over the backward pass."""

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
class Options:
    overlap: float = 1.0  # 0: no overlap; 1: the ideal pipeline
    fusion_bytes: float = 64 * 2**20  # HOROVOD_FUSION_THRESHOLD (64 MiB)
    cycle_s: float = 1e-3  # HOROVOD_CYCLE_TIME (1 ms)
    overhead_s: float = 0.0  # fixed per-step synchronisation cost with > 1 rank


def ring_allreduce_s(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def link(ranks: int, per_node: int, net: Network) -> tuple[float, float]:
    """(bandwidth, latency) of the ring's slowest link."""
    if ranks <= per_node:
        return net.intra_bandwidth, net.intra_latency
    return min(net.bandwidth, net.intra_bandwidth), max(net.latency, net.intra_latency)


def exposed_allreduce_s(w: Workload, ranks: int, per_node: int, net: Network,
                        opt: Options) -> tuple[float, float, int]:
    """(exposed s, total allreduce s, fused buffers) of one step."""
    bandwidth, latency = link(ranks, per_node, net)
    if ranks <= 1:
        return 0.0, 0.0, 0
    buffers = max(1, math.ceil(w.gradient_bytes / opt.fusion_bytes))
    total = sum(ring_allreduce_s(min(opt.fusion_bytes, w.gradient_bytes - i *
                                     opt.fusion_bytes), ranks, bandwidth, latency)
                for i in range(buffers))
    if opt.overlap <= 0:
        return total, total, buffers
    piped, piped_total, piped_buffers = _pipelined(w, ranks, bandwidth, latency, opt)
    return total - opt.overlap * (total - piped), piped_total, piped_buffers


def _pipelined(w: Workload, ranks: int, bandwidth: float, latency: float,
               opt: Options) -> tuple[float, float, int]:
    """The ideal pipeline: (exposed s, allreduce s, fused buffers)."""
    forward = w.compute_s * (1.0 - w.backward_share)
    backward = w.compute_s * w.backward_share
    ready, t = [], forward
    for nbytes, share in w.backward_layers():
        t += share * backward
        ready.append((t, nbytes))
    compute_end = forward + backward
    clock, busy_until, total, buffers, i = 0.0, 0.0, 0.0, 0, 0
    while i < len(ready):
        # the next cycle at which Horovod is free and something is ready
        clock = max(clock, busy_until, ready[i][0])
        clock = math.ceil(clock / opt.cycle_s - 1e-9) * opt.cycle_s if opt.cycle_s else clock
        fused = 0.0
        while i < len(ready) and ready[i][0] <= clock + 1e-12 and \
                (fused == 0.0 or fused + ready[i][1] <= opt.fusion_bytes):
            fused += ready[i][1]
            i += 1
        took = ring_allreduce_s(fused, ranks, bandwidth, latency)
        total += took
        buffers += 1
        busy_until = clock + took
        clock = busy_until
    return max(0.0, busy_until - compute_end), total, buffers


def project(w: Workload, gpus: int, per_node: int, net: Network, opt: Options) -> dict:
    """Step time, throughput and efficiency (vs one rank's compute x ranks) at `gpus` ranks."""
    exposed, total, buffers = exposed_allreduce_s(w, gpus, per_node, net, opt)
    overhead = opt.overhead_s if gpus > 1 else 0.0
    step = w.compute_s + exposed + overhead
    return {"gpus": gpus, "nodes": math.ceil(gpus / per_node), "compute_s": w.compute_s,
            "allreduce_s": total, "exposed_s": exposed, "overhead_s": overhead,
            "step_s": step, "fused_buffers": buffers,
            "images_per_s": gpus * w.batch_per_rank / step,
            "efficiency": w.compute_s / step}


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
