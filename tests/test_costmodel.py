"""The step-time model's mechanisms on known inputs: the allreduce algorithms' formulas, the
slowest-of-N wait, negotiation, tensor fusion, compression, and an overlap that comes out of
the simulated timeline (none when every gradient is ready at the end, nearly all when they
are spread over a long backward pass)."""

from __future__ import annotations

import math

import pytest

from hpctrain.scaling import costmodel
from hpctrain.scaling.costmodel import Horovod, Network, Workload, allreduce_s

FAST = Network(1e15, 0.0, 1e15, 0.0)  # communication costs nothing
NET = Network(10e9, 5e-6, 100e9, 2e-6)


def test_allreduce_algorithms_on_known_inputs():
    # one node of 8: the ring over the node's links, whatever the algorithm
    ring8 = 2 * 7 / 8 * 100e6 / 100e9 + 2 * 7 * 2e-6
    for algorithm in costmodel.ALGORITHMS:
        assert allreduce_s(100e6, 8, 8, NET, algorithm) == pytest.approx(ring8)
    # 4 nodes x 8: the ring's bottleneck is the network, its latency 2(N-1) steps
    assert allreduce_s(100e6, 32, 8, NET, "ring") == pytest.approx(
        2 * 31 / 32 * 100e6 / 10e9 + 2 * 31 * 5e-6)
    assert allreduce_s(100e6, 32, 8, NET, "tree") == pytest.approx(
        2 * 3 / 4 * 100e6 / 10e9 + 2 * (2 * 5e-6 + 7 * 2e-6))
    assert allreduce_s(100e6, 32, 8, NET, "hierarchical") == pytest.approx(
        2 * 7 / 8 * 100e6 / 100e9 + 2 * 3 / 4 * 100e6 / 10e9 + 2 * 3 * 5e-6 + 2 * 7 * 2e-6)
    # small messages on many nodes are latency-bound: the tree's log2 beats the ring's N
    small = [allreduce_s(1e3, 512, 4, NET, a) for a in ("ring", "tree", "auto")]
    assert small[1] < small[0] / 10 and small[2] == small[1]
    assert allreduce_s(100e6, 1, 8, NET) == 0.0 and allreduce_s(0.0, 8, 8, NET) == 0.0
    with pytest.raises(ValueError, match="algorithm 'fast'"):
        Horovod(algorithm="fast")


def test_the_slowest_of_n_ranks():
    assert costmodel.expected_max_normal(1) == 0.0
    # the tabulated expectations (Harter 1961): 2 -> 1/sqrt(pi), 8 -> 1.42360, 100 -> 2.50759
    assert costmodel.expected_max_normal(2) == pytest.approx(1 / math.pi ** 0.5, abs=1e-5)
    assert costmodel.expected_max_normal(8) == pytest.approx(1.42360, abs=1e-4)
    assert costmodel.expected_max_normal(100) == pytest.approx(2.50759, abs=1e-4)
    # with free communication, only the wait for the slowest rank is left
    w = Workload(0.2, 100e6, 64)
    got = costmodel.project(w, 8, 8, FAST, Horovod(cycle_s=0.0, jitter=0.02))
    assert got["efficiency"] == pytest.approx(1 / (1 + 0.02 * costmodel.expected_max_normal(8)))
    assert costmodel.project(w, 1, 8, NET, Horovod(jitter=0.5))["efficiency"] == 1.0


def test_overlap_comes_from_the_timeline():
    # all gradients ready at the very end (one layer holding all the backward time): the
    # allreduce is exposed whole; spread over the backward pass: only the tail is
    at_end = Workload(0.3, 40e6, 64, layers=((40e6, 1.0),))
    spread = Workload(0.3, 40e6, 64)
    hvd = Horovod(cycle_s=0.0)
    whole = costmodel.simulate(at_end, 16, 4, NET, hvd)
    assert whole["exposed_s"] == pytest.approx(whole["allreduce_s"] + whole["negotiation_s"])
    piped = costmodel.simulate(spread, 16, 4, NET, hvd)
    assert 0.0 < piped["exposed_s"] < 0.2 * piped["allreduce_s"]
    # 400 MB take 75 ms: a 300 ms step hides most of it, a 30 ms step cannot
    long, short = Workload(0.3, 400e6, 64), Workload(0.03, 400e6, 64)
    assert costmodel.project(long, 16, 4, NET, hvd)["efficiency"] > 0.9
    assert costmodel.project(short, 16, 4, NET, hvd)["efficiency"] < 0.5


def test_fusion_cycle_negotiation_and_compression():
    w = Workload(0.2, 100e6, 64)  # 50 layers of 2 MB
    # a 64 MiB buffer per cycle at most; a smaller threshold makes more buffers
    many = costmodel.simulate(w, 16, 4, NET, Horovod(fusion_bytes=4e6, cycle_s=0.05))
    few = costmodel.simulate(w, 16, 4, NET, Horovod(cycle_s=0.05))
    assert many["fused_buffers"] > few["fused_buffers"] >= 2
    # a longer cycle waits longer for the last gradients
    assert costmodel.simulate(w, 16, 4, FAST, Horovod(cycle_s=0.02))["step_s"] > \
        costmodel.simulate(w, 16, 4, FAST, Horovod(cycle_s=0.001))["step_s"]
    # negotiation: log2(N) latencies with the response cache, twice that without
    assert costmodel.negotiation_s(512, 4, NET, True) == pytest.approx(9 * 5e-6)
    assert costmodel.negotiation_s(512, 4, NET, False) == pytest.approx(18 * 5e-6)
    assert costmodel.negotiation_s(4, 4, NET, True) == pytest.approx(2 * 2e-6)
    # fp16 halves the bytes: a bandwidth-bound allreduce takes about half as long
    at_end = Workload(0.1, 200e6, 64, layers=((200e6, 1.0),))
    full = costmodel.simulate(at_end, 16, 4, NET, Horovod())["allreduce_s"]
    half = costmodel.simulate(at_end, 16, 4, NET, Horovod(compression="fp16"))["allreduce_s"]
    assert half == pytest.approx(full / 2, rel=0.02)


def test_parsing_bandwidth_and_time():
    assert costmodel.parse_bandwidth("25Gb/s") == pytest.approx(25e9 / 8)
    assert costmodel.parse_bandwidth("12.5 GB/s") == pytest.approx(12.5e9)
    assert costmodel.parse_seconds("10us") == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="25Gb/s"):
        costmodel.parse_bandwidth("fast")


def test_contention_slows_the_backward_pass_by_what_runs_beside_it():
    w = Workload(0.3, 200e6, 64)  # 200 MB over 10 GB/s: ~37 ms of allreduce, 0.2 s backward
    free = costmodel.simulate(w, 16, 4, NET, Horovod(cycle_s=0.0))
    busy = costmodel.simulate(w, 16, 4, NET, Horovod(cycle_s=0.0, contention=0.5))
    assert free["contention_s"] == 0.0 and busy["contention_s"] > 0.0
    # nearly all of the allreduce runs beside the backward pass, which grows by half of it
    assert busy["contention_s"] == pytest.approx(0.5 * busy["allreduce_s"], rel=0.1)
    assert busy["step_s"] == pytest.approx(free["step_s"] + busy["contention_s"], rel=0.02)
    with pytest.raises(ValueError, match="contention"):
        Horovod(contention=1.0)
