"""`hpctrain doctor` on the embedded cluster, healthy and broken on purpose (a missing
partition, more GPUs than the nodes have, environment lines that fail, unreadable data, a
full or missing scratch, GPUs Slurm allocated that TensorFlow cannot see), and its parsers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, hpctrain, write_config
from hpctrain.doctor import Check
from hpctrain.slurm.inventory import fields, gres_count, mpi_plugins

EMBEDDED = (REPO / "env" / "clusters" / "embedded.yaml").read_text()


def test_parsers_read_what_slurm_prints():
    assert gres_count("gpu:2", "gpu") == 2
    assert gres_count("gpu:a100:4(S:0-1),gpu:v100:2,mps:100", "gpu") == 6
    assert gres_count("(null)", "gpu") == 0
    # Slurm 22 lists one per line after a header; 23+ on one line; no PMIx: no pmix
    assert mpi_plugins("MPI plugin types are...\n\tnone\n\tpmi2\n\tpmix\n") == [
        "none", "pmi2", "pmix"]
    assert mpi_plugins("MPI plugin types are...\n\tnone\n\tcray_shasta\n\tpmi2\n") == [
        "cray_shasta", "none", "pmi2"]
    assert fields("PartitionName=debug AllowGroups=ALL Default=YES MaxTime=04:00:00") == {
        "PartitionName": "debug", "AllowGroups": "ALL", "Default": "YES",
        "MaxTime": "04:00:00"}
    assert Check("x", False, "broken", "mend it").line() == "FAIL x: broken -> mend it"
    assert Check("x", None, "elsewhere", "unused").line() == "--   x: elsewhere"


def _profile(tmp_path: Path, name: str, **changes: str) -> Path:
    text = EMBEDDED
    for key, value in changes.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key}:")]
        text = "\n".join([*lines, f"{key}: {value}"]) + "\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _doctor(cluster, *args: str) -> tuple[int, dict[str, str]]:
    res = hpctrain("doctor", *args, env={"SLURM_CONF": str(cluster.slurm_conf)},
                   timeout=600)
    lines = {}
    for line in res.stdout.splitlines():
        if line[:4] in ("ok  ", "FAIL", "--  ") and ": " in line:
            name = line[5:].split(":")[0]
            lines[name if name not in lines else f"node {name}"] = line
    assert res.stderr.strip() == "" or "Traceback" not in res.stderr, res.stderr
    return res.returncode, lines


@pytest.mark.slurm
def test_a_healthy_cluster_passes_on_the_login_node_and_on_a_node(slurm_cluster, fmnist_h5,
                                                                   tmp_path):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    code, lines = _doctor(slurm_cluster, "--config", str(config), "--on-node")
    assert code == 0, lines
    for name in ("profile", "slurm", "partition", "nodes", "launcher", "horovod", "keras",
                 "environment", "data"):
        assert lines[name].startswith("ok   "), lines[name]
    assert "pmix" in lines["launcher"] and "MPI, Gloo" in lines["horovod"]
    assert "28x28x1" in lines["data"]
    assert lines["node"].startswith("ok   node: node")  # ran on a compute node


@pytest.mark.slurm
def test_every_blocker_is_named_with_its_fix(slurm_cluster, fmnist_h5, tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not HDF5" * 100)
    bad_data = write_config(tmp_path / "bad.yaml", garbage)
    code, lines = _doctor(slurm_cluster, "--profile", str(_profile(
        tmp_path, "wrong", partition="nope", env_setup='["module load no-such-module"]')),
        "--config", str(bad_data))
    assert code == 1
    assert lines["partition"] == ("FAIL partition: partition 'nope' not found -> set "
                                  "`partition:` in the profile to one of: debug")
    assert lines["environment"].startswith("FAIL environment: ") and "module" in \
        lines["environment"]
    assert lines["data"].startswith(f"FAIL data: {garbage}: not a readable HDF5 file")

    tiny = tmp_path / "tiny scratch"
    tiny.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], check=True)
    try:
        code, lines = _doctor(slurm_cluster, "--profile", str(_profile(
            tmp_path, "greedy", node_gpus="8", gpus_per_node="4", scratch=f"'{tiny}'")),
            "--config", str(write_config(tmp_path / "ok.yaml", fmnist_h5)))
    finally:
        subprocess.run(["umount", "-l", str(tiny)])
    assert code == 1
    assert "4 GPUs per node asked (gpu), the nodes have 2" in lines["nodes"]
    assert "node_gpus 8, the nodes have 2" in lines["nodes"]
    assert lines["scratch"].startswith(f"FAIL scratch: {tiny} has ")
    assert "free, the data needs 55.5 MB" in lines["scratch"]


@pytest.mark.slurm
def test_node_checks_run_on_a_node(slurm_cluster, fmnist_h5, tmp_path):
    """What only a compute node can tell: its scratch directory, and whether TensorFlow sees
    the GPUs Slurm allocated (the embedded cluster's are fake: it sees none)."""
    missing = tmp_path / "no such dir"
    code, lines = _doctor(slurm_cluster, "--profile", str(_profile(
        tmp_path, "node", gpus_per_node="1", scratch=f"'{missing}'")),
        "--config", str(write_config(tmp_path / "ok.yaml", fmnist_h5)), "--on-node")
    assert code == 1
    assert lines["scratch"].startswith("--   scratch: ")  # not on the login node
    assert lines["node scratch"].startswith(f"FAIL scratch: {missing} does not exist on node")
    assert lines["gpus"].startswith("FAIL gpus: Slurm allocated 1 (CUDA_VISIBLE_DEVICES), "
                                    "TensorFlow sees 0")
