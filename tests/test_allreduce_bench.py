"""`hpctrain bench allreduce`: nccl-tests' bandwidths and the network fit on known inputs, bad
flags refused before anything is queued, and one real job on the embedded Slurm cluster whose
JSON feeds `hpctrain project`."""

from __future__ import annotations

import json

import pytest

from conftest import hpctrain
from hpctrain.bench.allreduce import message_sizes, node_layout, parse_bytes, parse_nodes
from hpctrain.scaling import network
from hpctrain.scaling.costmodel import Network
from hpctrain.validation import InputError


def test_sizes_and_bandwidths_as_nccl_tests_define_them():
    assert parse_bytes("8") == 8 and parse_bytes("64K") == 65536
    assert parse_bytes("256M") == 256 << 20 and parse_bytes("1GiB") == 1 << 30
    assert message_sizes(8, 64) == [8, 16, 32, 64]
    assert message_sizes(8, 100) == [8, 16, 32, 64]  # doubling, not past the largest
    assert parse_nodes("4,1,2,2") == [1, 2, 4]
    for bad in ("x", "8 KB/s", ""):
        with pytest.raises(InputError, match="not a size"):
            parse_bytes(bad)
    with pytest.raises(InputError, match="need 4 <= min <= max"):
        message_sizes(2, 64)
    with pytest.raises(InputError, match="node counts"):
        parse_nodes("1,0")
    # nodes by Slurm's names (the embedded cluster's share one host), numbered by first rank
    assert node_layout([(3, "b"), (0, "c"), (1, "c"), (2, "b")]) == [
        (0, 0, "c"), (1, 0, "c"), (2, 1, "b"), (3, 1, "b")]
    # 1 GB in 0.1 s on 4 ranks: algbw 10 GB/s, busbw 10 x 2 x 3 / 4 = 15 GB/s
    assert network.bandwidths(1e9, 0.1, 4) == pytest.approx((1e10, 1.5e10))
    assert network.bus_factor(1) == 0.0  # one rank moves nothing


def _sizes(t0: float, bandwidth: float, ranks: int, noise=lambda i: 1.0) -> list[dict]:
    return [{"bytes": b, "time_s": (t0 + b * network.bus_factor(ranks) / bandwidth) * noise(i)}
            for i, b in enumerate(message_sizes(8, 64 << 20))]


def test_the_fit_recovers_latency_and_bandwidth_and_feeds_a_network():
    f = network.fit(_sizes(200e-6, 3e9, 4), ranks=4, nodes=4)
    assert f.t0_s == pytest.approx(200e-6) and f.bus_bandwidth == pytest.approx(3e9)
    assert f.latency_s == pytest.approx(200e-6 / 6) and f.worst_error < 1e-9
    # +-5 % alternating noise: still within a few per cent
    noisy = network.fit(_sizes(200e-6, 3e9, 4, lambda i: 1.05 if i % 2 else 0.95), 4, 4)
    assert noisy.t0_s == pytest.approx(200e-6, rel=0.1)
    assert noisy.bus_bandwidth == pytest.approx(3e9, rel=0.1)
    data = {"kind": network.KIND, "points": [
        {"nodes": 1, "ranks": 1, "sizes": _sizes(50e-6, 1e12, 2)},
        {"nodes": 1, "ranks": 2, "sizes": _sizes(20e-6, 40e9, 2)},
        {"nodes": 2, "ranks": 2, "sizes": _sizes(100e-6, 5e9, 2)},
        {"nodes": 4, "ranks": 4, "sizes": _sizes(200e-6, 3e9, 4)}]}
    net, used, said = network.network_from(data, Network(1.0, intra_bandwidth=7e9))
    assert used.nodes == 4 and net.bandwidth == pytest.approx(3e9)
    assert net.latency == pytest.approx(200e-6 / 6)
    assert net.intra_bandwidth == pytest.approx(40e9)  # the 1-node, 2-rank point
    assert net.intra_latency == pytest.approx(20e-6 / 2)
    assert "3 GB/s bus bandwidth" in said and "within a node 40 GB/s" in said
    with pytest.raises(network.MeasurementError, match="2 or more nodes"):
        network.network_from({"kind": network.KIND, "points": data["points"][:2]})
    flat = [{"bytes": b, "time_s": 1e-3} for b in (8, 1 << 20)]
    with pytest.raises(network.MeasurementError, match="does not grow"):
        network.fit(flat, 2, 2)


def test_a_file_that_is_not_a_benchmark_is_refused_in_one_line(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    res = hpctrain("project", "--model", "resnet50", "--throughput", "1000", "--batch",
                   "64", "--network", str(other))
    assert res.returncode == 2 and "not a result of `hpctrain bench allreduce`" in res.stderr
    assert res.stderr.count("\n") == 1
    res = hpctrain("bench", "allreduce", "--nodes", "1,x", "--dry-run")
    assert res.returncode == 2 and "--nodes '1,x'" in res.stderr
    res = hpctrain("bench", "allreduce", "--max-bytes", "lots", "--dry-run")
    assert res.returncode == 2 and "'lots' is not a size" in res.stderr
    res = hpctrain("bench", "allreduce", "--out", str(tmp_path))  # a directory there already
    assert res.returncode == 1 and "already exists" in res.stderr
    assert res.stderr.count("\n") == 1


@pytest.mark.slow(reason="a 2-node Slurm job: two TensorFlow ranks time Horovod's allreduce")
@pytest.mark.slurm
@pytest.mark.mpi
def test_allreduce_job_on_one_and_two_nodes_feeds_project(slurm_cluster, tmp_path):
    out = tmp_path / "net"
    env = {"SLURM_CONF": str(slurm_cluster.slurm_conf)}
    res = hpctrain("bench", "allreduce", "--nodes", "1,2", "--max-bytes", "16M", "--warmup",
                   "1", "--iters", "3", "--out", str(out), env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads((out / "allreduce.json").read_text())
    assert data["kind"] == network.KIND and data["iters"] == 3
    one, two = data["points"]
    assert (one["nodes"], one["ranks"], two["nodes"], two["ranks"]) == (1, 1, 2, 2)
    assert len(two["node_names"]) == 2 and one["node_names"][0] in two["node_names"]
    for point in data["points"]:
        assert [r["bytes"] for r in point["sizes"]] == message_sizes(8, 16 << 20)
        for r in point["sizes"]:
            assert r["wrong"] == 0 and r["time_s"] == max(r["rank_means_s"]) > 0
            assert len(r["rank_means_s"]) == point["ranks"] and len(r["rank0_samples_s"]) == 3
            assert r["algbw"] == pytest.approx(r["bytes"] / r["time_s"])
    assert data["horovod"]["controller"] in ("MPI", "Gloo") and data["node"]["model"]
    readme = (out / "README.md").read_text()
    assert "## 2 node(s), 2 rank(s)" in readme and "| 16 MiB |" in readme
    assert "run on 1 host(s)" in readme  # the embedded cluster's nodes: no network, said
    assert (out / "allreduce.png").read_bytes()[:4] == b"\x89PNG"
    assert "1 node(s), 1 rank(s): 16 MiB in" in res.stdout
    # the JSON feeds a projection; --render writes the same README from it alone
    proj = hpctrain("project", "--model", "resnet50", "--throughput", "1270", "--batch",
                    "256", "--gpus", "1,8", "--gpus-per-node", "4", "--network",
                    str(out / "allreduce.json"))
    assert proj.returncode == 0, proj.stderr
    assert "Network measured: " in proj.stdout and "between nodes (fit over 2 nodes" in \
        proj.stdout
    (out / "README.md").unlink()
    again = hpctrain("bench", "allreduce", "--render", str(out))
    assert again.returncode == 0 and (out / "README.md").read_text() == readme


def test_the_committed_measurement_is_what_its_json_renders():
    """results/network/embedded/README.md comes from its allreduce.json (`hpctrain bench
    allreduce --render`), never typed by hand; the committed study projections use it."""
    from pathlib import Path

    from conftest import REPO
    from hpctrain.bench.allreduce import readme

    out = REPO / "results" / "network" / "embedded"
    data = network.load(out / "allreduce.json")
    assert readme(data, Path("results/network/embedded")) == (out / "README.md").read_text()
    assert [p["nodes"] for p in data["points"]] == [1, 2, 4]
    assert all(r["wrong"] == 0 for p in data["points"] for r in p["sizes"])
    for study in (REPO / "results" / "studies").glob("*/projection.md"):
        assert "--network results/network/embedded/allreduce.json" in study.read_text()


def _nccl_output(hosts: list[str], gpus_per_host: int, t0: float, bus: float, *,
                 new_layout: bool = True, factor: float | None = None,
                 prefix: str = "") -> str:
    """An all_reduce_perf output as nccl-tests prints it (src/common.cu's formats), its
    times from t = t0 + size x factor / bus (factor: an allreduce's 2 (n - 1) / n)."""
    n = len(hosts) * gpus_per_host
    factor = network.bus_factor(n) if factor is None else factor
    group = "Group  0 " if new_layout else ""
    lines = ["# nccl-tests version 2.13.9 nccl-headers=21903 nccl-library=21903"] \
        if new_layout else []
    lines += ["# nThread 1 nGpus 1 minBytes 8 maxBytes 268435456 step: 2(factor) warmup "
              "iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0", "#", "# Using devices"]
    lines += [f"#  Rank {h * gpus_per_host + g:2d} {group}Pid {4000 + g:6d} on {host:>10} "
              f"device {g:2d} [0x{16 + g:02x}] NVIDIA A100-SXM4-40GB"
              for h, host in enumerate(hosts) for g in range(gpus_per_host)]
    lines += ["#", "#" + " " * 60 + "out-of-place                       in-place",
              "#       size         count      type   redop" + ("    root" if new_layout else "")
              + "     time   algbw   busbw " + ("#wrong" if new_layout else " error")
              + "     time   algbw   busbw " + ("#wrong" if new_layout else " error")]
    for size in message_sizes(8, 256 << 20):
        us = (t0 + size * factor / bus) * 1e6
        t = f"{us:7.0f}" if us >= 10000 else f"{us:7.1f}" if us >= 100 else f"{us:7.2f}"
        alg = size / (float(t) * 1e-6) / 1e9
        ok = "     0" if new_layout else "  5e-07"
        cols = (f"{size:12d}  {size // 4:12d}  {'float':>8s}  {'sum':>6s}"
                + ("      -1" if new_layout else "") + f"  {t}  {alg:6.2f}  {alg * factor:6.2f}"
                + ok)
        lines.append(prefix + cols + f"  {t}  {alg:6.2f}  {alg * factor:6.2f}" + ok)
    lines += ["# Out of bounds values : 0 OK", "# Avg bus bandwidth    : 7.4", "#"]
    return "\n".join(lines) + "\n"


def test_nccl_tests_output_becomes_a_network_measurement(tmp_path):
    """all_reduce_perf's output, old layout and new, plain or prefixed by the launcher, read
    into allreduce.json: the fit recovers what the figures were made with, and the file
    feeds `hpctrain project --network`."""
    from hpctrain.bench import nccl_tests

    one = _nccl_output(["gpu01"], 8, 20e-6, 150e9)
    two = _nccl_output(["gpu01", "gpu02"], 8, 40e-6, 22e9, new_layout=False,
                       prefix="[1,0]<stdout>:")
    p = nccl_tests.parse(two, "two")
    assert (p["nodes"], p["ranks"], p["node_names"]) == (2, 16, ["gpu01", "gpu02"])
    assert p["gpus"] == ["NVIDIA A100-SXM4-40GB"] and len(p["sizes"]) == 26
    big = p["sizes"][-1]
    assert big["bytes"] == 256 << 20 and big["wrong"] == 0
    assert big["busbw"] == pytest.approx(big["algbw"] * 30 / 16)
    f = network.fit(p["sizes"], p["ranks"], p["nodes"])
    assert f.bus_bandwidth == pytest.approx(22e9, rel=0.01)
    assert f.t0_s == pytest.approx(40e-6, rel=0.05)
    assert nccl_tests.parse(one.replace("\n", "\n0: "), "one")["ranks"] == 8  # srun --label
    files = [tmp_path / "two.txt", tmp_path / "one.txt"]
    files[0].write_text(two)
    files[1].write_text(one)
    out = tmp_path / "net"
    res = hpctrain("bench", "allreduce", "--from-nccl-tests", *map(str, files), "--out",
                   str(out))
    assert res.returncode == 0, res.stderr
    assert "2 node(s), 16 rank(s): 256 MiB in" in res.stdout
    data = network.load(out / "allreduce.json")
    assert [(q["nodes"], q["ranks"]) for q in data["points"]] == [(1, 8), (2, 16)]
    net, used, said = network.network_from(data)
    assert net.bandwidth == pytest.approx(22e9, rel=0.01)
    assert net.latency == pytest.approx(40e-6 / 30, rel=0.05)  # no Horovod cycle to remove
    assert net.intra_bandwidth == pytest.approx(150e9, rel=0.01)
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Allreduce by nccl-tests (all_reduce_perf)")
    assert "nccl-tests 2.13.9" in readme and "| 256 MiB |" in readme
    assert (out / "allreduce.png").read_bytes()[:4] == b"\x89PNG"
    proj = hpctrain("project", "--model", "resnet50", "--throughput", "1270", "--batch",
                    "256", "--gpus", "8,16", "--gpus-per-node", "8", "--network",
                    str(out / "allreduce.json"))
    assert proj.returncode == 0, proj.stderr
    assert "between nodes (fit over 2 nodes, 16 ranks)" in proj.stdout
    again = hpctrain("bench", "allreduce", "--from-nccl-tests", str(files[0]), "--out",
                     str(out))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_other_nccl_tests_output_is_refused_in_one_line(tmp_path):
    from hpctrain.bench import nccl_tests

    scatter = _nccl_output(["a", "b"], 4, 30e-6, 20e9, factor=7 / 8)  # reduce_scatter_perf
    with pytest.raises(nccl_tests.NcclTestsError, match="busbw / algbw is 0.875, an "
                       "allreduce's on 8 ranks is 1.750"):
        nccl_tests.parse(scatter, "scatter")
    good = _nccl_output(["a"], 2, 30e-6, 20e9)
    with pytest.raises(nccl_tests.NcclTestsError, match="no '#  Rank N"):
        nccl_tests.parse("\n".join(ln for ln in good.splitlines() if "Rank" not in ln))
    with pytest.raises(nccl_tests.NcclTestsError, match="one rank moves nothing"):
        nccl_tests.parse(_nccl_output(["a"], 1, 30e-6, 20e9))
    with pytest.raises(nccl_tests.NcclTestsError, match="no result rows"):
        nccl_tests.parse("\n".join(ln for ln in good.splitlines() if ln.startswith("#")))
    last = good.splitlines()[-4]
    size = last.split()[0]
    with pytest.raises(nccl_tests.NcclTestsError, match="is not size / time"):
        nccl_tests.parse(good.replace(last, last.replace(f"{size}  ", f"{int(size) * 2}  ", 1)))
    res = hpctrain("bench", "allreduce", "--from-nccl-tests", str(tmp_path / "missing.txt"))
    assert res.returncode == 2 and "cannot be read" in res.stderr
    assert res.stderr.count("\n") == 1
