"""The Slurm job system against the real embedded cluster: time limits and preemption
(signal -> checkpoint -> requeue -> resume), fail fast on a dead rank, job arrays and
submitit sweeps, the three launchers, chains, status and interactive sessions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, VENV_BIN, hpctrain, read_report, write_config

pytestmark = pytest.mark.slurm

# Longer than the 60-90 s after which Slurm's time-limit signal below has surely arrived, on
# any machine of this kind (they differ 4x): rank 1 sleeps 0.35 s in each of its 310 steps
# (the straggler test hook; the other rank waits for it in the allreduce), so the run takes
# 110 s and more however fast the compute is. The numerics are untouched: a stopped and
# resumed run must still end with the uninterrupted run's weights.
LONG = dict(model="cnn", batch_size=64, epochs=5, train_limit=8000, test_limit=2000)
SLOW = {"HPCTRAIN_TEST_SLOW_RANK": "1:0.35"}
TINY = ["train_limit=2048", "test_limit=512", "epochs=1"]


def _env(cluster) -> dict:
    return {"SLURM_CONF": str(cluster.slurm_conf)}


def _long_env(cluster) -> dict:
    return {**_env(cluster), **SLOW}


def _sacct(cluster, job_id: str, *fields: str, duplicates: bool = False) -> list[str]:
    argv = ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(fields)]
    res = subprocess.run(argv + (["--duplicates"] if duplicates else []), env=cluster.env(),
                         capture_output=True, text=True, check=True)
    return res.stdout.split()


def _job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "submission.json").read_text())["job_id"]


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def long_config(fmnist_h5, tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("long") / "long.yaml", fmnist_h5, **LONG)


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, long_config, tmp_path_factory) -> dict:
    """The reference: the same config as one job that nobody stops."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    res = hpctrain("submit", "--config", str(long_config), "--nodes", "2", "--signal-seconds",
                   "0", "--run-dir", str(run_dir), "--wait", env=_long_env(slurm_cluster),
                   timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return read_report(run_dir)


def _check_resumed_equals(report: dict, reference: dict, run_dir: Path) -> None:
    assert report["status"] == "completed" and report["ranks_in_sync"]["ok"]
    assert _epochs(run_dir) == list(range(1, LONG["epochs"] + 1))  # every epoch once
    assert abs(report["test_accuracy"] - reference["test_accuracy"]) <= 0.003
    # stronger: data order, dropout masks and optimizer state resume exactly
    assert report["ranks_in_sync"]["weight_sha256"] == reference["ranks_in_sync"][
        "weight_sha256"]


def test_time_limit_signal_checkpoint_requeue_resume(slurm_cluster, long_config, uninterrupted,
                                                     tmp_path):
    """--time=3 with USR1 120 s before the limit: the batch script writes STOP, the ranks
    checkpoint mid-epoch and exit 75, the job requeues itself and resumes. slurmctld checks
    time limits every 30 s, so the signal comes 30-60 s after each (re)start: a slow machine
    needs more segments, hence room for 8 restarts."""
    run_dir = tmp_path / "run"
    res = hpctrain("submit", "--config", str(long_config), "--nodes", "2", "--time", "3",
                   "--signal-seconds", "120", "--max-restarts", "8", "--run-dir", str(run_dir),
                   "--wait", env=_long_env(slurm_cluster), timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = read_report(run_dir)
    _check_resumed_equals(report, uninterrupted, run_dir)
    segments = report["segments"]
    assert len(segments) >= 2
    assert all(s["ended"] == "stopped (STOP file)" for s in segments[:-1])
    assert segments[-1]["ended"] == "completed"
    assert [s["restart_count"] for s in segments] == list(range(len(segments)))
    log = (run_dir / f"slurm-{report['slurm']['job_id']}.out").read_text()
    assert "stop requested" in log and "hpctrain: requeueing job" in log
    states = _sacct(slurm_cluster, report["slurm"]["job_id"], "State", duplicates=True)
    assert states == ["REQUEUED"] * (len(segments) - 1) + ["COMPLETED"]
    assert "segments: " in (run_dir / "report.md").read_text()


def test_preemption_signal_to_ranks(slurm_cluster, long_config, uninterrupted, tmp_path):
    """`scancel --signal=USR1 <job>` (what a preempting site sends to the job's tasks)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([str(VENV_BIN / "hpctrain"), "submit", "--config", str(long_config),
                             "--nodes", "2", "--run-dir", str(run_dir), "--wait"],
                            env={**os.environ, **_long_env(slurm_cluster)},
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (run_dir / "submission.json").is_file(), 60, "submission")
        job_id = _job_id(run_dir)
        _wait_for(lambda: _epochs(run_dir)[:1] == [1], 300, "epoch 1")
        subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm_cluster.env(),
                       check=True)
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    report = read_report(run_dir)
    _check_resumed_equals(report, uninterrupted, run_dir)
    first, *rest = report["segments"]
    assert first["ended"] == "stopped (SIGUSR1)" and first["last_epoch"] >= 1
    assert rest and rest[-1]["ended"] == "completed" and rest[0]["restart_count"] == 1


def _rank_pid(job_id: str, rank: int) -> int | None:
    """The training process of `rank` in `job_id` (all logical nodes are this host)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in kv)
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_PROCID") == str(rank) and \
                b"train" in cmd and any(c.endswith(b"hpctrain") for c in cmd):
            return int(proc.name)
    return None


def test_dead_rank_fails_job_fast_and_is_named(slurm_cluster, long_config, tmp_path):
    run_dir = tmp_path / "run"
    hpctrain("submit", "--config", str(long_config), "--nodes", "2", "--run-dir", str(run_dir),
             env=_long_env(slurm_cluster), check=True)
    job_id = _job_id(run_dir)
    log = run_dir / f"slurm-{job_id}.out"
    _wait_for(lambda: log.is_file() and "steps/epoch" in log.read_text(), 300, "training")
    pid = _wait_for(lambda: _rank_pid(job_id, 1), 30, "rank 1's process")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    state = _wait_for(lambda: next((s for s in _sacct(slurm_cluster, job_id, "State")
                                    if s not in ("RUNNING", "PENDING", "COMPLETING")), None),
                      90, "the job to end")
    elapsed = time.monotonic() - killed
    assert state == "FAILED" and elapsed < 60, (state, elapsed)
    report = read_report(run_dir)
    assert report["status"] == "failed"
    failure = report["failure"]
    assert failure["first_failed_rank"] == 1
    node = failure["failed_ranks"][0]["node"]  # wherever Slurm put rank 1
    assert node.startswith("node") and node == report.get("rank_nodes", [node, node])[1]
    assert failure["failed_ranks"][0] == {"rank": 1, "node": node, "reason": "Killed",
                                          "detail": None}
    assert failure["exit_code"] != 0
    assert f"rank 1 on {node}: Killed" in (run_dir / "report.md").read_text()


def test_array_of_20_tasks_and_status(slurm_cluster, fmnist_h5, tmp_path):
    config = write_config(tmp_path / "sweep.yaml", fmnist_h5, model="softmax", batch_size=64,
                          optimizer="sgd")
    sweep_dir = tmp_path / "results" / "sweep"
    rates = ",".join(str(0.01 * (i + 1)) for i in range(10))
    res = hpctrain("sweep", "--config", str(config), *TINY, "--param", f"learning_rate={rates}",
                   "--param", "batch_size=32,64", "--run-dir", str(sweep_dir), "--wait",
                   env=_env(slurm_cluster), timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    reports = [read_report(sweep_dir / f"task-{i}") for i in range(20)]
    assert {r["run_dir"] for r in reports} == {str(sweep_dir / f"task-{i}") for i in range(20)}
    assert all(r["status"] == "completed" for r in reports)
    pairs = {(r["training"]["learning_rate"], r["training"]["batch_size"]) for r in reports}
    assert len(pairs) == 20  # every grid point, each once
    job_id = _job_id(sweep_dir)
    assert sorted(r["slurm"]["array_task_id"] for r in reports) == sorted(map(str, range(20)))
    assert {r["slurm"]["job_id"] for r in reports} == {job_id}

    status = hpctrain("status", "--results", str(tmp_path / "results"), env=_env(slurm_cluster),
                      cwd=tmp_path, check=True).stdout.splitlines()
    assert status[0].split() == ["JOB", "STATE", "ELAPSED", "RESTARTS", "RUN"]
    rows = [line.split() for line in status[1:]]
    assert len(rows) == 20 and all(r[1] == "done" for r in rows)
    assert sorted(r[4] for r in rows) == sorted(f"results/sweep/task-{i}" for i in range(20))


def test_submitit_sweep(slurm_cluster, fmnist_h5, tmp_path):
    config = write_config(tmp_path / "sweep.yaml", fmnist_h5, model="mlp5", batch_size=64)
    sweep_dir = tmp_path / "sweep"
    res = hpctrain("sweep", "--backend", "submitit", "--config", str(config), *TINY,
                   "--param", "activation=tanh,relu", "--run-dir", str(sweep_dir), "--wait",
                   env=_env(slurm_cluster), timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    reports = [read_report(sweep_dir / f"task-{i}") for i in range(2)]
    assert [r["training"]["activation"] for r in reports] == ["tanh", "relu"]
    assert all(r["status"] == "completed" and r["launcher"] == "srun" for r in reports)
    assert list((sweep_dir / "submitit").glob("*_log.out"))


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_launchers_two_nodes(slurm_cluster, fmnist_h5, tmp_path, launcher):
    """srun is every other job's launcher; mpirun and horovodrun --gloo here."""
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, model="cnn", batch_size=64)
    run_dir = tmp_path / "run"
    res = hpctrain("submit", "--config", str(config), *TINY, "--nodes", "2", "--launcher",
                   launcher, "--run-dir", str(run_dir), "--wait", env=_env(slurm_cluster),
                   timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = read_report(run_dir)
    assert report["launcher"] == launcher and report["ranks"] == 2
    assert len(set(report["rank_nodes"])) == 2  # one rank on each of 2 nodes
    assert report["ranks_in_sync"]["ok"] is True


def test_profile_file_with_node_local_scratch(slurm_cluster, fmnist_h5, tmp_path):
    """A profile given by path, with `scratch`: each node copies the data there first, the
    ranks read that copy, and the job removes it afterwards."""
    scratch = tmp_path / "node local"
    scratch.mkdir()
    profile = tmp_path / "site.yaml"
    embedded = (REPO / "env" / "clusters" / "embedded.yaml").read_text()
    profile.write_text(embedded.replace("scratch: null\n", f"scratch: '{scratch}'\nnodes: 2\n"))
    config = write_config(tmp_path / "exp.yaml", fmnist_h5, model="softmax", batch_size=64)
    run_dir = tmp_path / "run"
    res = hpctrain("submit", "--profile", str(profile), "--config", str(config), *TINY,
                   "--run-dir", str(run_dir), "--wait", env=_env(slurm_cluster), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = read_report(run_dir)
    config_used = json.loads((run_dir / "config.json").read_text())
    job = report["slurm"]["job_id"]
    assert config_used["data"] == f"{scratch}/hpctrain-{job}/{{node}}/{fmnist_h5.name}"
    log = (run_dir / f"slurm-{job}.out").read_text()
    assert all(f"{node}: 1 file(s)" in log for node in set(report["rank_nodes"]))
    assert report["nodes"] == 2 and report["status"] == "completed"
    assert list(scratch.iterdir()) == []  # cleaned up


def test_chain_stage_train_report(slurm_cluster, tmp_path):
    data = tmp_path / "staged" / "fmnist.h5"
    config = write_config(tmp_path / "exp.yaml", data, model="softmax", batch_size=64,
                          expected_accuracy=0.5)
    run_dir = tmp_path / "run"
    res = hpctrain("submit", "--config", str(config), *TINY, "--chain", "stage,train,report",
                   "--stage-source", "/usr/share/datasets/fashion-mnist", "--stage-dataset",
                   "fashion-mnist", "--run-dir", str(run_dir), "--wait",
                   env=_env(slurm_cluster), timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "afterok" in res.stdout and data.is_file()
    jobs = json.loads((run_dir / "submission.json").read_text())["jobs"]
    for step in ("stage", "train", "report"):
        assert _sacct(slurm_cluster, jobs[step], "State") == ["COMPLETED"], step
    report_log = (run_dir / f"slurm-{jobs['report']}-report.out").read_text()
    assert "expected accuracy >= 0.5: met" in report_log
    assert read_report(run_dir)["status"] == "completed"


def test_chain_stops_at_a_failed_step(slurm_cluster, tmp_path):
    """Staging from a directory without IDX files fails; train and report are cancelled
    (--kill-on-invalid-dep), not left pending forever."""
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path / "exp.yaml", tmp_path / "out.h5", model="softmax")
    run_dir = tmp_path / "run"
    res = hpctrain("submit", "--config", str(config), *TINY, "--chain", "stage,train,report",
                   "--stage-source", str(tmp_path / "empty"), "--stage-dataset", "mnist",
                   "--run-dir", str(run_dir), "--wait", env=_env(slurm_cluster), timeout=300)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = json.loads((run_dir / "submission.json").read_text())["jobs"]
    assert _sacct(slurm_cluster, jobs["stage"], "State") == ["FAILED"]
    for step in ("train", "report"):
        assert _sacct(slurm_cluster, jobs[step], "State")[0] == "CANCELLED", step
    assert not (tmp_path / "out.h5").exists()


def test_interactive_allocation(slurm_cluster):
    res = hpctrain("interactive", "--nodes", "2", "--time", "5", "--run", "--", "srun",
                   "printenv", "SLURMD_NODENAME", env=_env(slurm_cluster), timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("+ salloc --nodes=2 --ntasks-per-node=1")
    nodes = res.stdout.split()[-2:]  # any 2 of the cluster's nodes
    assert len(set(nodes)) == 2 and all(n.startswith("node") for n in nodes)
