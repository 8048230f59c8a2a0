"""The Slurm job system against the real embedded cluster: time limits and preemption
(signal -> checkpoint -> requeue -> resume), fail fast on a dead rank, job arrays and
submitit sweeps, the three launchers, chains, status and interactive sessions."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import LONG, REPO, VENV_BIN, check_tensorboard, hpctrain, read_report, write_config
from hpctrain.progress import wait_until
from hpctrain.slurm.profiles import slurm_minutes

pytestmark = pytest.mark.slurm

# The two long jobs share one config with the uninterrupted reference run (conftest.LONG,
# run in the shared launch). One is stopped twice, first preempted after epoch 1, then, in
# its resumed run, by its time limit after epoch 2, and must end with the reference's
# weights; the other has a rank killed. A rank made slow (the straggler test hook: rank 1
# sleeps in each step; the other rank waits for it in the allreduce) paces a job without
# touching its numerics, so that a signal sent after an epoch arrives mid-run on any machine
# of this kind (they differ 6x). The time limit's signal comes within 30 s of the limit
# being cut (slurmctld's time-limit check), so the stopped job's first two runs sleep 0.5 s
# in each step (31 a epoch): 45 s and more after epoch 2 of 5; its last run goes at full
# speed. The dead-rank job is killed within a second or two of training, so 0.2 s is enough.
# While rank 1 sleeps, rank 0's Horovod thread negotiates every cycle (1 ms by default) and
# MPI polls: CPU burnt by a waiting rank, which on a slow machine is taken from every other
# job. A 50 ms cycle makes the wait cheaper (measured here: a paced 2-rank run used 28 CPU-s
# with the default, 18 with 50 ms, 18 unpaced). Sums of two ranks' gradients do not depend
# on how tensors are fused, so the weights stay exact.
PACE = {"stopped": "1:0.5:2", "dead_rank": "1:0.2", "node_failures": "1:0.2:2"}
STALE_JOB = "999999"  # a job that ran long ago on every node and left its copies there
TINY = ["train_limit=2048", "test_limit=512", "epochs=1"]


def _env(cluster) -> dict:
    return {"SLURM_CONF": str(cluster.slurm_conf)}


def _sacct(cluster, job_id: str, *fields: str, duplicates: bool = False) -> list[str]:
    argv = ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(fields)]
    res = subprocess.run(argv + (["--duplicates"] if duplicates else []), env=cluster.env(),
                         capture_output=True, text=True, check=True)
    return res.stdout.split()


def _job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "submission.json").read_text())["job_id"]


def _epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


class Background(threading.Thread):
    """`fn()` on a thread; `get()` returns its value or raises what it raised."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.value, self.error = fn, None, None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test by get()
            self.error = e

    def get(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), f"still running after {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.value


@dataclass
class LongJob:
    run_dir: Path
    proc: subprocess.Popen  # `hpctrain submit` (with --wait, except the dead rank's)

    def finished(self, timeout: float = 1500) -> tuple[int, str]:
        if self.proc.returncode is None or not hasattr(self, "out"):
            self.out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, self.out


def _after_epoch(run_dir: Path, epoch: int) -> str:
    """Waits until the job in run_dir has submitted and finished `epoch`; its job id."""
    wait_until(lambda: (run_dir / "submission.json").is_file(), 120, "submission")
    wait_until(lambda: epoch in _epochs(run_dir), 900, f"epoch {epoch}")
    return _job_id(run_dir)


def _job_field(cluster, job_id: str, field: str) -> str | None:
    """One field of `scontrol show job` (RunTime, TimeLimit, Restarts, ...)."""
    res = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=cluster.env(),
                         capture_output=True, text=True)
    match = re.search(rf"\b{field}=(\S+)", res.stdout)
    return match.group(1) if match else None


# the stopped job's own limit, and how long before it the job asks for USR1; the limit is
# brought near after epoch 2, and back once the job has requeued itself
TIME_LIMIT_MIN, SIGNAL_S = 30, 170


def _restarts(cluster, job_id: str) -> int:
    return int(_job_field(cluster, job_id, "Restarts") or "0")


def _preempt_then_time_limit(cluster, run_dir: Path) -> int:
    """Preempted after epoch 1: `scancel --signal=USR1 <job>` (what a preempting site sends
    to the job's tasks). Then, once the requeued job has finished epoch 2, out of time,
    without waiting half an hour for it: its limit is cut (`scontrol update TimeLimit=`, as
    its owner may) to the first whole minute that leaves 110-170 s, less than the SIGNAL_S
    before the limit at which the job asked for USR1, so slurmctld sends the signal at its
    next time-limit check (every 30 s), just as it would near the original limit. Once the
    job has requeued itself again, the limit goes back up for the last run. Returns the
    minutes the second run was given."""
    job_id = _after_epoch(run_dir, 1)
    subprocess.run(["scancel", "--signal=USR1", job_id], env=cluster.env(), check=True)
    wait_until(lambda: _restarts(cluster, job_id) == 1, 900, "the job to requeue after USR1")
    _after_epoch(run_dir, 2)
    elapsed = round(slurm_minutes(_job_field(cluster, job_id, "RunTime") or "0:0:0") * 60)
    minutes = max(3, (elapsed + SIGNAL_S) // 60)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}"],
                   env=cluster.env(), check=True)
    wait_until(lambda: _restarts(cluster, job_id) == 2, 900,
              "the job to requeue itself near its time limit")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={TIME_LIMIT_MIN}"],
                   env=cluster.env(), check=True)
    return minutes


def _kill_rank_1(cluster, run_dir: Path) -> tuple[str, float]:
    """SIGKILL rank 1 once training runs; the job's end state and how long it took."""
    wait_until(lambda: (run_dir / "submission.json").is_file(), 120, "submission")
    job_id = _job_id(run_dir)
    log = run_dir / f"slurm-{job_id}.out"
    wait_until(lambda: log.is_file() and "steps/epoch" in log.read_text(), 900, "training")
    pid = wait_until(lambda: _rank_pid(job_id, 1), 30, "rank 1's process")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    state = wait_until(lambda: next((s for s in _sacct(cluster, job_id, "State")
                                    if s not in ("RUNNING", "PENDING", "COMPLETING")), None),
                      90, "the job to end")
    return state, time.monotonic() - killed


def _job_nodes(cluster, job_id: str) -> list[str]:
    return subprocess.run(["scontrol", "show", "hostnames", _job_field(cluster, job_id,
                                                                       "NodeList") or ""],
                          env=cluster.env(), capture_output=True, text=True).stdout.split()


def _hang(cluster, job_id: str, node: str) -> list[int]:
    """`node` stops answering, as a node whose kernel hangs: its slurmd is killed and the
    job's processes there (the rank and its slurmstepd) are frozen, so that nothing on the
    other node notices before Slurm does. The frozen pids."""
    os.kill(cluster.running()[f"slurmd.{node}"], signal.SIGKILL)
    frozen = set()
    for proc in Path("/proc").iterdir():
        env = _environ(proc) if proc.name.isdigit() else {}
        if env.get("SLURM_JOB_ID") == job_id and env.get("SLURMD_NODENAME") == node:
            frozen.add(int(proc.name))
            with contextlib.suppress(OSError):
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if Path(f"/proc/{parent}/comm").read_text().strip() == "slurmstepd":
                    frozen.add(parent)
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return sorted(frozen)


def _fail_two_nodes(cluster, run_dir: Path) -> dict:
    """After epoch 1 the job's second node is marked DOWN (as an administrator or a health
    check does); in the rerun, after epoch 2, its second node hangs and Slurm marks it DOWN
    itself (SlurmdTimeout). Each time Slurm ends the run with NODE_FAIL and requeues the
    job. The hung node is power-cycled (its processes gone, slurmd started again) once the
    third run is under way. The two nodes, by how they failed."""
    job_id = _after_epoch(run_dir, 1)
    marked = _job_nodes(cluster, job_id)[-1]
    subprocess.run(["scontrol", "update", f"NodeName={marked}", "State=DOWN",
                    "Reason=hpctrain test: node failure"], env=cluster.env(), check=True)
    wait_until(lambda: _restarts(cluster, job_id) >= 1, 300, "the requeue after NODE_FAIL")
    _after_epoch(run_dir, 2)  # the rerun resumed after epoch 1
    hung = _job_nodes(cluster, job_id)[-1]
    frozen = _hang(cluster, job_id, hung)
    wait_until(lambda: _restarts(cluster, job_id) >= 2, 300, "the requeue after the hang")
    wait_until(lambda: _job_field(cluster, job_id, "JobState") == "RUNNING", 300,
              "the third run")
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.start_slurmd(hung)
    return {"marked": marked, "hung": hung}


def _scratch_profile(root: Path) -> Path:
    """The embedded profile with node-local scratch and whole nodes: its copies go to
    scratch/<job>/<node>/, one directory per logical node, as on nodes with disks of their
    own. Every node already
    holds a copy of a long-gone job (a node that died mid-job never removed its copy)."""
    scratch = root / "scratch"
    for node in [f"node{i}" for i in range(1, 9)]:
        stale = scratch / f"hpctrain-{STALE_JOB}" / node
        stale.mkdir(parents=True)
        (stale / "fashion-mnist.h5").write_bytes(b"\0" * 1000)
    profile = root / "scratch.yaml"
    embedded = (REPO / "env" / "clusters" / "embedded.yaml").read_text()
    # whole nodes: failing a node must not touch the other long jobs (a node's 2 CPUs can
    # otherwise hold a rank of two jobs)
    profile.write_text(embedded.replace("scratch: null\n", f"scratch: '{scratch}'\n")
                       + "extra_sbatch: ['--exclusive']\n")
    return profile


@pytest.fixture(scope="module")
def long_jobs(slurm_cluster, fmnist_h5, tmp_path_factory):
    """The three long jobs at once on 6 of the test cluster's nodes, so that their waits
    (the slow rank's sleeps, Slurm's signals, the requeues) overlap: one preempted after
    epoch 1 and stopped by its time limit after epoch 2, one whose rank 1 is killed, and one
    (its data copied to node-local scratch) whose second node goes down after epoch 1. The
    tests below check them."""
    root = tmp_path_factory.mktemp("long")
    config = write_config(root / "long.yaml", fmnist_h5, **LONG)

    def submit(name: str, *args: str, wait: bool = True) -> LongJob:
        argv = [str(VENV_BIN / "hpctrain"), "submit", "--config", str(config), "--nodes", "2",
                "--run-dir", str(root / name), *args, *(["--wait"] if wait else [])]
        env = {**os.environ, **_env(slurm_cluster)}
        if name in PACE:
            env.update(HPCTRAIN_TEST_SLOW_RANK=PACE[name], HOROVOD_CYCLE_TIME="50")
        return LongJob(root / name, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True))

    jobs = {"stopped": submit("stopped", "--time", str(TIME_LIMIT_MIN),
                              "--signal-seconds", str(SIGNAL_S), "--max-restarts", "3"),
            "dead_rank": submit("dead_rank", wait=False),
            "node_failures": submit("node_failures", "--profile",
                                    str(_scratch_profile(root)))}
    actions = {"stopped": Background(lambda: _preempt_then_time_limit(
                   slurm_cluster, jobs["stopped"].run_dir)),
               "dead_rank": Background(lambda: _kill_rank_1(
                   slurm_cluster, jobs["dead_rank"].run_dir)),
               "node_failures": Background(lambda: _fail_two_nodes(
                   slurm_cluster, jobs["node_failures"].run_dir))}
    try:
        yield jobs, actions
    finally:
        for job in jobs.values():
            job.proc.kill()
            if (job.run_dir / "submission.json").is_file():
                subprocess.run(["scancel", _job_id(job.run_dir)], env=slurm_cluster.env())
        subprocess.run(["scontrol", "update", "NodeName=node[1-8]", "State=RESUME"],
                       env=slurm_cluster.env(), capture_output=True)  # if a test failed


@pytest.fixture(scope="module")
def uninterrupted(one_launch) -> dict:
    """The reference: the same config run on 2 ranks that nobody stops, outside Slurm (in
    the shared launch: conftest.LONG)."""
    return one_launch.report("long-reference")


def _check_resumed_equals(report: dict, reference: dict, run_dir: Path) -> None:
    assert report["status"] == "completed" and report["ranks_in_sync"]["ok"]
    assert _epochs(run_dir) == list(range(1, LONG["epochs"] + 1))  # every epoch once
    assert abs(report["test_accuracy"] - reference["test_accuracy"]) <= 0.003
    # stronger: data order, dropout masks and optimizer state resume exactly
    assert report["ranks_in_sync"]["weight_sha256"] == reference["ranks_in_sync"][
        "weight_sha256"]


@pytest.mark.slow(
    reason="the first of the long jobs' tests: waits while both start at once")
def test_dead_rank_fails_job_fast_and_is_named(slurm_cluster, long_jobs):
    jobs, actions = long_jobs
    state, elapsed = actions["dead_rank"].get(timeout=1200)
    assert state == "FAILED" and elapsed < 60, (state, elapsed)
    run_dir = jobs["dead_rank"].run_dir
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


@pytest.mark.slow(reason="waits for a preemption, Slurm's time-limit signal, two "
                  "checkpoints, two requeues and the resumed runs: wall-clock bound, "
                  "overlapped with the dead-rank job")
@pytest.mark.mpi  # its reference runs in the shared 2-rank launch
def test_preemption_then_time_limit_checkpoint_requeue_resume(slurm_cluster, long_jobs,
                                                              uninterrupted):
    """`scancel --signal=USR1 <job>` after epoch 1: srun hands the signal to the ranks, they
    checkpoint mid-epoch and exit 75, the job requeues itself. In the resumed run, USR1
    SIGNAL_S before the time limit (brought near after epoch 2): the batch script writes
    STOP, the ranks checkpoint and exit 75, the job requeues itself again and resumes with
    its limit back, to the uninterrupted run's weights."""
    jobs, actions = long_jobs
    job = jobs["stopped"]
    assert actions["stopped"].get(timeout=1500) >= 3
    code, out = job.finished()
    assert code == 0, out[-3000:]
    report = read_report(job.run_dir)
    _check_resumed_equals(report, uninterrupted, job.run_dir)
    preempted, timed_out, last = report["segments"]
    assert preempted["ended"] == "stopped (SIGUSR1)" and preempted["last_epoch"] >= 1
    assert timed_out["ended"] == "stopped (STOP file)" and timed_out["last_epoch"] >= 2
    assert last["ended"] == "completed"
    assert [s["restart_count"] for s in report["segments"]] == [0, 1, 2]
    log = (job.run_dir / f"slurm-{report['slurm']['job_id']}.out").read_text()
    assert "stop requested" in log and "hpctrain: requeueing job" in log
    states = _sacct(slurm_cluster, report["slurm"]["job_id"], "State", duplicates=True)
    assert states == ["REQUEUED", "REQUEUED", "COMPLETED"]
    assert "segments: " in (job.run_dir / "report.md").read_text()
    check_tensorboard(job.run_dir)  # every epoch once across the three segments


@pytest.mark.slow(reason="waits for two node failures, Slurm's requeues and the resumed "
                  "runs: wall-clock bound, overlapped with the other long jobs")
@pytest.mark.mpi  # its reference runs in the shared 2-rank launch
def test_node_failures_requeue_resume_and_node_local_copies(slurm_cluster, long_jobs,
                                                            uninterrupted):
    """A node of a running 2-node job marked DOWN after epoch 1, then, in the rerun, a node
    that hangs (slurmd gone, its processes frozen): each time Slurm ends the run with
    NODE_FAIL and requeues the job; each rerun copies the data to its nodes' scratch again,
    resumes from the last checkpoint, and the job ends with the uninterrupted run's weights,
    every epoch once. A failed run's nodes never removed their copies: the next job on such
    a node does, with any other copy a gone job left there."""
    jobs, actions = long_jobs
    job = jobs["node_failures"]
    failed = actions["node_failures"].get(timeout=1500)
    code, out = job.finished()
    assert code == 0, out[:1000] + out[-2000:]
    report = read_report(job.run_dir)
    _check_resumed_equals(report, uninterrupted, job.run_dir)
    job_id = report["slurm"]["job_id"]
    assert [s["restart_count"] for s in report["segments"]] == [0, 1, 2]
    assert _sacct(slurm_cluster, job_id, "State", duplicates=True) == [
        "NODE_FAIL", "NODE_FAIL", "COMPLETED"]
    runs = (job.run_dir / f"slurm-{job_id}.out").read_text().split(f"hpctrain: job {job_id} on")
    copied = re.compile(r"^(node\d+): 1 file\(s\)", re.M)
    nodes = [set(copied.findall(run)) for run in runs[1:]]  # each run copied on its 2 nodes
    assert [len(n) for n in nodes] == [2, 2, 2], runs
    assert failed["marked"] in nodes[0] and failed["hung"] in nodes[1] - nodes[2]
    scratch = job.run_dir.parent / "scratch"
    # the last run's nodes removed their copies at the end; the failed runs were killed
    # before their clean-up, so their nodes that the last run did not use keep theirs; the
    # gone job's copies were removed on every node the job used
    assert {p.name for p in (scratch / f"hpctrain-{job_id}").iterdir()} == \
        (nodes[0] | nodes[1]) - nodes[2]
    assert {p.name for p in (scratch / f"hpctrain-{STALE_JOB}").iterdir()} == {
        f"node{i}" for i in range(1, 9)} - (nodes[0] | nodes[1] | nodes[2])
    # the power-cycled node is back by itself (ReturnToService); the next job there removes
    # what the failed run left on it
    hung = failed["hung"]
    wait_until(lambda: _node_state(slurm_cluster, hung) in ("IDLE", "MIXED"), 120,
              f"{hung} back in service")
    config = job.run_dir.parent / "long.yaml"
    later = subprocess.run(
        ["srun", f"--nodelist={hung}", "-N1", "-n1", "bash", "-c",
         f'exec {VENV_BIN / "hpctrain"} stage local-copy --config "$1" --ranks-per-node 1 '
         '--dest "$2/hpctrain-${SLURM_JOB_ID}"', "_", str(config), str(scratch)],
        env=slurm_cluster.env(), capture_output=True, text=True, timeout=300)
    assert later.returncode == 0, later.stderr
    assert f"{hung}: removed {scratch}/hpctrain-{job_id}/{hung}, left by job {job_id}" in \
        later.stdout
    assert not (scratch / f"hpctrain-{job_id}" / hung).exists()


def _node_state(cluster, node: str) -> str:
    res = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=cluster.env(),
                         capture_output=True, text=True)
    return res.stdout.strip().upper()


def _environ(proc: Path) -> dict[str, str]:
    try:
        raw = (proc / "environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _rank_pid(job_id: str, rank: int) -> int | None:
    """The training process of `rank` in `job_id` (all logical nodes are this host)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        env = _environ(proc)
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_PROCID") == str(rank) and \
                b"train" in cmd and any(c.endswith(b"hpctrain") for c in cmd):
            return int(proc.name)
    return None


def test_array_of_tasks_and_status(slurm_cluster, fmnist_h5, tmp_path):
    """A grid over two keys as one job array: every point once, one task each, all in
    `status`. (Larger grids are the same array with more tasks: parse_grid's product is
    checked in test_jobsystem_units.py.)"""
    config = write_config(tmp_path / "sweep.yaml", fmnist_h5, model="softmax", batch_size=64,
                          optimizer="sgd")
    sweep_dir = tmp_path / "results" / "sweep"
    rates, batches, n = ("0.01", "0.05"), ("32",), 2
    res = hpctrain("sweep", "--config", str(config), *TINY, "--param",
                   f"learning_rate={','.join(rates)}", "--param",
                   f"batch_size={','.join(batches)}", "--run-dir", str(sweep_dir), "--wait",
                   env=_env(slurm_cluster), timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    reports = [read_report(sweep_dir / f"task-{i}") for i in range(n)]
    assert {r["run_dir"] for r in reports} == {str(sweep_dir / f"task-{i}") for i in range(n)}
    assert all(r["status"] == "completed" for r in reports)
    pairs = {(r["training"]["learning_rate"], r["training"]["batch_size"]) for r in reports}
    assert pairs == {(float(lr), int(b)) for lr in rates for b in batches}  # each point once
    job_id = _job_id(sweep_dir)
    assert sorted(r["slurm"]["array_task_id"] for r in reports) == sorted(map(str, range(n)))
    assert {r["slurm"]["job_id"] for r in reports} == {job_id}

    status = hpctrain("status", "--results", str(tmp_path / "results"), env=_env(slurm_cluster),
                      cwd=tmp_path, check=True).stdout.splitlines()
    assert status[0].split() == ["JOB", "STATE", "ELAPSED", "RESTARTS", "RUN"]
    rows = [line.split() for line in status[1:]]
    assert len(rows) == n and all(r[1] == "done" for r in rows)
    assert sorted(r[4] for r in rows) == sorted(f"results/sweep/task-{i}" for i in range(n))


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
