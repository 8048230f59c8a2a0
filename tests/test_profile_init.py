"""`hpctrain profile init`: a profile written from the live cluster, on the embedded test
cluster and on a second embedded configuration laid out like a site (typed GPU gres, two
kinds of node with features, two partitions with their own limits); and its pure parts on
Slurm's own text."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO, hpctrain
from hpctrain.cluster.embedded import EmbeddedCluster, ExtraPartition, NodeKind
from hpctrain.slurm.inventory import Node, Partition, fields, gres_count
from hpctrain.slurm.profile_init import Answers, Survey, draft, render
from hpctrain.validation import InputError

# `scontrol show partition -o` / `show node -o` lines as Slurm 22.05 prints them
PARTITIONS = [
    "PartitionName=gpu AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=04:00:00 "
    "Nodes=node[1-4] State=UP TotalCPUs=8 TotalNodes=4",
    "PartitionName=a100 AllowGroups=ALL Default=NO MaxNodes=2 MaxTime=1-00:00:00 "
    "Nodes=node[1-2] State=UP TotalCPUs=4 TotalNodes=2",
]
NODES = [
    f"NodeName=node{i} Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot={cpus} "
    f"AvailableFeatures={feat} ActiveFeatures={feat} Gres={gres} RealMemory={mem} State=IDLE"
    for i, cpus, feat, gres, mem in [
        (1, 64, "a100,nvlink", "gpu:a100:4(S:0-1)", 512000),
        (2, 64, "a100,nvlink", "gpu:a100:4(S:0-1)", 512000),
        (3, 32, "v100", "gpu:v100:2", 192000),
        (4, 32, "v100", "gpu:v100:2", 192000)]]


def _survey(plugins=("none", "pmi2", "pmix")) -> Survey:
    parts = [Partition.parse(fields(p)) for p in PARTITIONS]
    nodes = [Node.parse(fields(n)) for n in NODES]
    return Survey("site", parts, {"gpu": nodes, "a100": nodes[:2]}, list(plugins), "proj",
                  "/local/%n")


def _profile(name: str, ans: Answers, sv: Survey | None = None) -> dict:
    text = render(name, draft(name, sv or _survey(), ans), "hpctrain profile init x")
    return yaml.safe_load(text)


def test_slurm_text_parses_into_partitions_and_nodes():
    gpu, a100 = (Partition.parse(fields(p)) for p in PARTITIONS)
    assert (gpu.default, gpu.max_nodes, gpu.max_time, gpu.total_nodes) == (True, None,
                                                                           "04:00:00", 4)
    assert (a100.default, a100.max_nodes, a100.max_time) == (False, 2, "1-00:00:00")
    node = Node.parse(fields(NODES[0]))
    assert (node.cpus, node.memory_mb, node.features) == (64, 512000, ("a100", "nvlink"))
    assert node.gpus() == 4 and node.gpu_types() == {"a100": 4} and node.usable
    assert gres_count("gpu:a100:4,gpu:v100:2", "gpu:v100") == 2
    assert gres_count("gpu:a100:4,gpu:v100:2", "gpu") == 6


def test_draft_describes_the_partition_asked_for():
    p = _profile("site", Answers(partition="a100"))
    assert p["partition"] == "a100" and p["gres_name"] == "gpu:a100"
    assert (p["node_gpus"], p["gpus_per_node"], p["ntasks_per_node"]) == (4, 4, 4)
    assert (p["node_cpus"], p["cpus_per_task"]) == (64, 16)
    assert (p["max_nodes"], p["max_time"], p["launcher"]) == (2, "1-00:00:00", "srun")
    assert p["account"] == "proj"  # the default account Slurm's accounting gives
    # the default partition mixes GPU types: any type, the fewest GPUs and CPUs of a node
    d = _profile("site", Answers())
    assert (d["partition"], d["gres_name"], d["node_gpus"], d["node_cpus"]) == (
        "gpu", "gpu", 2, 32)
    # a feature narrows the nodes described; what the user says is kept as said
    v = _profile("site", Answers(constraint="v100", account="other", scratch="$TMPDIR",
                                 env_setup=("module load cuda",)))
    assert (v["constraint"], v["gres_name"], v["max_nodes"]) == ("v100", "gpu:v100", 2)
    assert (v["account"], v["scratch"], v["env_setup"]) == ("other", "$TMPDIR",
                                                            ["module load cuda"])
    # no PMIx in srun: mpirun
    assert _profile("site", Answers(), _survey(("none", "pmi2")))["launcher"] == "mpirun"


def test_draft_marks_its_guesses_and_refuses_what_is_not_there():
    text = render("site", draft("site", _survey(), Answers()), "hpctrain profile init site")
    guessed = {line.split(":")[0] for line in text.splitlines() if "# guess" in line}
    assert guessed == {"partition", "account", "ntasks_per_node", "cpus_per_task", "time"}
    assert "a100 (2 nodes), nvlink (2 nodes), v100 (2 nodes)" in text
    assert "TmpFS is /local/%n" in text
    with pytest.raises(InputError, match="partition 'h100' not found; Slurm has: gpu, a100"):
        draft("site", _survey(), Answers(partition="h100"))
    with pytest.raises(InputError, match="constraint 'h100': no node .* offer a100"):
        draft("site", _survey(), Answers(constraint="h100"))


def _init(cluster, *args: str):
    return hpctrain("profile", "init", *args, env={"SLURM_CONF": str(cluster.slurm_conf)},
                    timeout=120)


@pytest.mark.slurm
def test_init_on_the_embedded_cluster_writes_a_profile_that_submits(slurm_cluster, tmp_path):
    out = tmp_path / "here.yaml"
    res = _init(slurm_cluster, "here", "--out", str(out), "--yes")
    assert res.returncode == 0, res.stderr
    assert "sbatch --test-only: sbatch: Job" in res.stdout and "partition debug" in res.stdout
    p = yaml.safe_load(out.read_text())
    assert (p["partition"], p["node_gpus"], p["node_cpus"], p["max_nodes"]) == (
        "debug", slurm_cluster.gpus_per_node, slurm_cluster.cpus_per_node, slurm_cluster.nodes)
    assert (p["gres_name"], p["launcher"], p["max_time"]) == ("gpu", "srun", "04:00:00")
    # never overwritten unless asked; then replaced whole
    out.write_text("partition: mine\n")
    res = _init(slurm_cluster, "here", "--out", str(out), "--yes")
    assert res.returncode == 2 and "exists; --force replaces it" in res.stderr
    assert out.read_text() == "partition: mine\n"
    assert _init(slurm_cluster, "here", "--out", str(out), "--force").returncode == 0
    assert yaml.safe_load(out.read_text())["partition"] == "debug"
    # what the draft asks of the cluster is checked by Slurm before anything is written
    res = _init(slurm_cluster, "here", "--partition", "nope", "--out", str(tmp_path / "x.yaml"))
    assert res.returncode == 2 and "partition 'nope' not found; Slurm has: debug" in res.stderr
    assert not (tmp_path / "x.yaml").exists()


SITE = dict(nodes=4, base_port=29817, partition="gpu", max_time="2-00:00:00",
            kinds=(NodeKind("a100", ("a100", "nvlink")), NodeKind("v100", ("v100",))),
            extra_partitions=(ExtraPartition("short", 1, 2, "01:00:00", max_nodes=1),))


@pytest.fixture(scope="module")
def site_cluster(tmp_path_factory):
    """A second embedded cluster laid out like a site: typed GPU gres (a100 on node1-2,
    v100 on node3-4) with node features, a default partition of all four nodes and a short
    one of two."""
    cluster = EmbeddedCluster(root=tmp_path_factory.mktemp("site"), **SITE)
    try:
        cluster.up(timeout=90)
        yield cluster
    finally:
        cluster.down()


@pytest.mark.slurm
def test_init_on_a_site_layout_reads_types_features_and_partitions(site_cluster, tmp_path):
    out = tmp_path / "site.yaml"
    res = _init(site_cluster, "site", "--out", str(out), "--yes", "--constraint", "a100",
                "--scratch", "$TMPDIR", "--env-line", "export OMP_NUM_THREADS=1")
    assert res.returncode == 0, res.stderr
    assert "sbatch --test-only: sbatch: Job" in res.stdout
    text = out.read_text()
    p = yaml.safe_load(text)
    assert (p["partition"], p["constraint"], p["gres_name"], p["max_nodes"]) == (
        "gpu", "a100", "gpu:a100", 2)
    assert (p["max_time"], p["scratch"], p["env_setup"]) == (
        "2-00:00:00", "$TMPDIR", ["export OMP_NUM_THREADS=1"])
    assert "GPU types" not in text and "others: short" in text
    # the short partition: its own MaxTime and MaxNodes, both types of GPU on offer
    res = _init(site_cluster, "short", "--partition", "short", "--print", "--yes")
    assert res.returncode == 0, res.stderr
    s = yaml.safe_load(res.stdout.split("profile short: checked")[0])
    assert (s["partition"], s["max_nodes"], s["max_time"], s["time"]) == (
        "short", 1, "01:00:00", "01:00:00")
    assert s["gres_name"] == "gpu:a100"  # node1-2 are the a100 nodes
    # without a constraint the default partition mixes types: plain gpu, and says so
    res = _init(site_cluster, "mixed", "--print", "--yes")
    assert "gres_name: gpu  # GPU types: a100 (2 nodes), v100 (2 nodes)" in res.stdout


def test_shown_cluster_checks_match_their_record():
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "cluster_checks.py"),
                          "render", "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
