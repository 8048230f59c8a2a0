"""The embedded cluster: idempotent `up`, accounting through slurmdbd, fake GPUs, status."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import TEST_NODES, VENV_BIN
from hpctrain.cluster import daemons
from hpctrain.cluster.embedded import EmbeddedCluster

pytestmark = pytest.mark.slurm


def test_up_is_idempotent_and_complete(slurm_cluster):
    pids = slurm_cluster.running()
    assert all(pids.values()), pids
    t0 = time.monotonic()
    slurm_cluster.up()
    assert time.monotonic() - t0 < 10
    assert slurm_cluster.running() == pids  # nothing restarted
    out = slurm_cluster.sinfo()
    for node in slurm_cluster.node_names:
        assert node in out
    assert out.count("gpu:2") == len(slurm_cluster.node_names) == TEST_NODES


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


def _listeners_beyond_loopback(pids) -> list[str]:
    return [f"{pid} {addr}:{port}" for pid in pids for addr, port in daemons.listening(pid)
            if not daemons.is_loopback(addr)]


def test_every_daemon_listens_on_loopback_only(slurm_cluster, tmp_path):
    """The socket table of every daemon, and of srun and slurmstepd while a 2-node step
    runs: no listener on a non-loopback address."""
    import psutil

    pids = [p for p in slurm_cluster.running().values() if p]
    assert len(pids) == 4 + TEST_NODES  # munged, mariadbd, slurmdbd, slurmctld; a slurmd each
    running = slurm_cluster.running()
    assert all(daemons.listening(pid) for name, pid in running.items() if name != "munged")
    assert _listeners_beyond_loopback(pids) == []
    assert slurm_cluster.exposed() == []
    ready = tmp_path / "step-running"
    job = subprocess.run(
        ["sbatch", "--parsable", "-N2", f"--chdir={tmp_path}", "--wrap",
         f"srun -N2 bash -c 'touch {ready}; sleep 5'"],
        env=slurm_cluster.env(), capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline, "the job step did not start"
        time.sleep(0.1)
    steps = [p.pid for p in psutil.process_iter(["name"])
             if p.info["name"] in ("srun", "slurmstepd")]
    assert steps, "no srun/slurmstepd process while the step runs"
    assert _listeners_beyond_loopback(steps) == []
    subprocess.run(["scancel", job], env=slurm_cluster.env(), check=True)


def test_munge_key_and_secrets_are_private(slurm_cluster):
    root = slurm_cluster.root
    key = root / "munge" / "munge.key"
    assert oct(key.stat().st_mode & 0o777) == "0o400"
    assert oct((root / "munge").stat().st_mode & 0o777) == "0o700"
    for name in ("slurmdbd.conf", "slurm.conf"):
        assert (root / "etc" / name).stat().st_mode & 0o077 == 0
    assert (root / "db" / "password").stat().st_mode & 0o077 == 0
    munged = Path(f"/proc/{slurm_cluster.running()['munged']}/cmdline").read_bytes()
    assert b"--force" not in munged  # munged checks the key and directories itself
    password = (root / "db" / "password").read_text().strip()
    assert len(password) >= 24
    for proc in Path("/proc").glob("[0-9]*"):  # never on any command line
        try:
            assert password.encode() not in (proc / "cmdline").read_bytes(), proc
        except OSError:
            continue


def test_each_install_gets_its_own_name_and_password(slurm_cluster, tmp_path):
    from hpctrain.cluster import accounting

    other = EmbeddedCluster(root=tmp_path / "c3")
    (other.root / "db").mkdir(parents=True)
    assert accounting.password(other.root) != accounting.password(slurm_cluster.root)
    assert other.cluster_name != slurm_cluster.cluster_name
    assert other.cluster_name == other.cluster_name  # kept once generated


def test_down_signals_only_identified_daemons(tmp_path):
    """A stale pid file naming an unrelated process (pid reuse) is not obeyed."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        other = EmbeddedCluster(root=tmp_path / "c4", base_port=38817)
        other.pid_file("slurmctld").parent.mkdir(parents=True)
        other.pid_file("slurmctld").write_text(f"{victim.pid}\n")
        assert other.running()["slurmctld"] is None
        assert other.down() == []
        assert victim.poll() is None, "down() killed a process that was not its daemon"
    finally:
        victim.kill()


def test_hosts_line_added_and_removed_by_its_owner(slurm_cluster, tmp_path):
    from hpctrain.cluster import hosts

    assert hosts.marker(slurm_cluster.root) in Path("/etc/hosts").read_text()
    fake = tmp_path / "hosts"
    fake.write_text("127.0.0.1 localhost\n")
    a, b = tmp_path / "a", tmp_path / "b"
    assert hosts.add(["node1", "node2"], a, fake) and hosts.add(["node1", "node2"], b, fake)
    assert hosts.add(["node1", "node2"], a, fake)  # once per cluster
    assert fake.read_text().count("node1") == 2
    assert hosts.remove(a, fake)
    assert fake.read_text() == f"127.0.0.1 localhost\n127.0.0.1 node1 node2 {hosts.marker(b)}\n"
    assert hosts.remove(b, fake) and fake.read_text() == "127.0.0.1 localhost\n"
