"""The user's own network, as an allreduce benchmark measured it (`hpctrain bench allreduce`):
time against message size through Horovod, the bandwidths as nccl-tests defines them, and
the two constants a projection needs, fitted from it. Pure functions.

For one allreduce of S bytes on n ranks taking t seconds (nccl-tests, doc/PERFORMANCE.md):

    algorithm bandwidth  algbw = S / t
    bus bandwidth        busbw = algbw * 2 (n - 1) / n

The bus bandwidth is what each rank's link carried, comparable to the hardware's rate at
any n. A ring allreduce takes t = t0 + S * 2 (n - 1) / n / B; a weighted least-squares fit
of the measured sizes (weights 1/t: every size counts by its relative error) gives B (the
bus bandwidth the link sustains) and t0 (the time of an allreduce of nothing: the 2 (n - 1)
message latencies of the ring, and Horovod's own cost per collective: the wait for its next
cycle, which the benchmark keeps short, and the negotiation). A projection takes B as the
network between nodes and (t0 - cycle) / (2 (n - 1)) as the latency per message, from the
largest node count measured (the cost model adds a step's cycles and negotiation itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpctrain.scaling.costmodel import Network

KIND = "hpctrain allreduce benchmark"  # what its JSON says it is


class MeasurementError(ValueError):
    """A network file that is not an allreduce benchmark's result, or has nothing to fit."""


def bus_factor(ranks: int) -> float:
    """busbw / algbw for an allreduce on `ranks` ranks (0 on one rank: nothing moves)."""
    return 2.0 * (ranks - 1) / ranks


def bandwidths(nbytes: float, seconds: float, ranks: int) -> tuple[float, float]:
    """(algbw, busbw) in bytes/s."""
    alg = nbytes / seconds
    return alg, alg * bus_factor(ranks)


@dataclass(frozen=True)
class Fit:
    ranks: int
    nodes: int
    t0_s: float  # an allreduce of nothing
    bus_bandwidth: float  # bytes/s
    worst_error: float  # largest relative error of the fit over the sizes used
    cycle_s: float = 0.0  # Horovod's cycle while measuring: part of t0, not of the network

    @property
    def latency_s(self) -> float:
        """Per message of the ring (2 (n - 1) of them per allreduce), Horovod's cycle taken
        out of t0 (the cost model adds the cycles of a step itself)."""
        return max(self.t0_s - self.cycle_s, 0.0) / (2 * (self.ranks - 1))


def fit(sizes: list[dict], ranks: int, nodes: int, cycle_s: float = 0.0) -> Fit:
    """t = t0 + S * 2 (n - 1) / n / B through the points {"bytes", "time_s"} of one rank
    count, each weighted by 1 / t (least squares on the relative error)."""
    if ranks < 2:
        raise MeasurementError("a fit needs 2 or more ranks (one rank moves nothing)")
    pts = [(bus_factor(ranks) * p["bytes"], p["time_s"]) for p in sizes if p["time_s"] > 0]
    if len(pts) < 2:
        raise MeasurementError("a fit needs 2 or more message sizes")
    # minimise sum(((t0 + x / B - t) / t)^2): linear in (t0, 1/B)
    s_aa = sum(1 / t**2 for _, t in pts)
    s_ab = sum(x / t**2 for x, t in pts)
    s_bb = sum(x * x / t**2 for x, t in pts)
    s_a = sum(1 / t for _, t in pts)
    s_b = sum(x / t for x, t in pts)
    det = s_aa * s_bb - s_ab * s_ab
    if det <= 0:
        raise MeasurementError("the message sizes do not span enough to fit a bandwidth")
    t0 = (s_a * s_bb - s_b * s_ab) / det
    inv_b = (s_aa * s_b - s_ab * s_a) / det
    if inv_b <= 0:
        raise MeasurementError("the time does not grow with the message size: no bandwidth "
                               "to fit (measure larger messages: --max-bytes)")
    t0 = max(t0, 0.0)
    worst = max(abs(t0 + x * inv_b - t) / t for x, t in pts)
    return Fit(ranks, nodes, t0, 1.0 / inv_b, worst, cycle_s)


def load(path: str | Path) -> dict:
    """A benchmark's allreduce.json, checked for what a projection reads."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise MeasurementError(f"{p}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or not data.get("points"):
        raise MeasurementError(f"{p}: not a result of `hpctrain bench allreduce`")
    return data


def network_from(data: dict, intra: Network | None = None) -> tuple[Network, Fit, str]:
    """The network between nodes from the benchmark's largest node count with 2 or more
    nodes; within a node, from a 1-node point of 2 or more ranks if measured, else `intra`'s.
    Returns (network, the fit used, one line saying where each figure came from)."""
    intra = intra or Network(bandwidth=1.0)
    across = [p for p in data["points"] if p["nodes"] >= 2]
    if not across:
        raise MeasurementError("the benchmark measured no point across 2 or more nodes")
    far = max(across, key=lambda p: (p["nodes"], p["ranks"]))
    cycle_s = data.get("horovod", {}).get("cycle_time_ms", 0.0) / 1e3
    f = fit(far["sizes"], far["ranks"], far["nodes"], cycle_s)
    bandwidth, latency = f.bus_bandwidth, f.latency_s
    within = [p for p in data["points"] if p["nodes"] == 1 and p["ranks"] >= 2]
    said = (f"measured: {bandwidth / 1e9:.3g} GB/s bus bandwidth and {latency * 1e6:.3g} us "
            f"per message between nodes (fit over {far['nodes']} nodes, {far['ranks']} ranks)")
    intra_bw, intra_lat = intra.intra_bandwidth, intra.intra_latency
    if within:
        near = max(within, key=lambda p: p["ranks"])
        g = fit(near["sizes"], near["ranks"], 1, cycle_s)
        intra_bw, intra_lat = g.bus_bandwidth, g.latency_s
        said += f"; within a node {intra_bw / 1e9:.3g} GB/s, {intra_lat * 1e6:.3g} us"
    return Network(bandwidth, latency, intra_bw, intra_lat), f, said
