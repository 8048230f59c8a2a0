"""The embedded cluster: idempotent `up`, accounting through slurmdbd, fake GPUs, status."""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import VENV_BIN
from hpctrain.cluster import EmbeddedCluster

pytestmark = pytest.mark.slurm


def test_up_is_idempotent_and_complete(slurm_cluster):
    pids = slurm_cluster.running()
    assert all(pids.values()), pids
    t0 = time.monotonic()
    slurm_cluster.up()
    assert time.monotonic() - t0 < 10
    assert slurm_cluster.running() == pids  # nothing restarted
    out = slurm_cluster.sinfo()
    for node in ("node1", "node2", "node3", "node4"):
        assert node in out
    assert out.count("gpu:2") == 4


def test_accounting_and_gpus(slurm_cluster, tmp_path):
    env = slurm_cluster.env()
    job = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-N1", "--gres=gpu:2", f"--chdir={tmp_path}",
         "--wrap", "echo gpus=$CUDA_VISIBLE_DEVICES"],
        env=env, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert (tmp_path / f"slurm-{job}.out").read_text().strip() == "gpus=0,1"
    sacct = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "State,AllocTRES"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert sacct.startswith("COMPLETED|") and "gres/gpu=2" in sacct


def test_status_and_down_on_a_second_cluster(tmp_path):
    """A stopped cluster reports so; `down` stops only what its PID files name."""
    other = EmbeddedCluster(root=tmp_path / "c2", base_port=37817)
    assert not other.is_up()
    assert other.down() == []
    res = subprocess.run([str(VENV_BIN / "hpctrain"), "cluster", "status", "--dir",
                          str(other.root)], capture_output=True, text=True)
    assert res.returncode == 1 and "not (fully) up" in res.stdout
