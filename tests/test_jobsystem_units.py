"""Pure parts of the job system: profiles, Slurm times, launcher failure lines, sacct
parsing, sweep grids and chains."""

from __future__ import annotations

import pytest

from hpctrain.experiment import ConfigError
from hpctrain.report.run_report import job_outcome
from hpctrain.slurm.client import parse_sacct
from hpctrain.slurm.postmortem import last_segment, parse_failures, summary
from hpctrain.slurm.profiles import ProfileError, available, load_profile, slurm_minutes
from hpctrain.slurm.queue import parse_chain
from hpctrain.slurm.script import JobSpecError
from hpctrain.slurm.status import summarize_records
from hpctrain.slurm.sweep import parse_grid


def test_shipped_profiles_load():
    assert {"embedded", "example-gpu"} <= set(available())
    emb = load_profile("embedded")
    assert (emb.partition, emb.node_gpus, emb.max_nodes, emb.launcher) == ("debug", 2, 4, "srun")
    gpu = load_profile("example-gpu")
    assert gpu.ntasks_per_node == gpu.gpus_per_node == 4 and gpu.scratch == "$TMPDIR"


@pytest.mark.parametrize("text, message", [
    ("partiton: gpu\n", "unknown key(s) partiton"),
    ("node_gpus: four\n", "node_gpus='four' should be int"),
    ("launcher: ssh\n", "launcher 'ssh' unknown"),
    ("extra_sbatch: [exclusive]\n", "must be one sbatch option"),
    ("- a\n", "must be a mapping of keys"),
    ("scratch: /local/$(reboot)\n", "scratch '/local/"),
    ("scratch: '/local/`id`'\n", "only (it is expanded inside double quotes)"),
])
def test_bad_profiles(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_profile(str(path))


@pytest.mark.parametrize("value, minutes", [
    ("30", 30), ("5:30", 5.5), ("01:00:00", 60), ("2-00:00:00", 2880), ("1-12", 2160),
    ("1-00:30", 1470)])
def test_slurm_minutes(value, minutes):
    assert slurm_minutes(value) == minutes


SRUN_LOG = """hpctrain: job 7 on node[1-2], restart 0, t
0: [rank 0/2 node1] old segment
hpctrain: job 7 on node[1-2], restart 1, t
1: Traceback (most recent call last):
1: MemoryError: out of memory
srun: error: node2: task 1: Exited with exit code 1
srun: launch/slurm: _step_signal: Terminating StepId=7.0
srun: error: node1: task 0: Terminated
"""


def test_failures_from_srun_lines():
    failures = parse_failures(last_segment(SRUN_LOG))
    assert [(f["rank"], f["node"], f["reason"]) for f in failures] == [
        (1, "node2", "Exited with exit code 1"), (0, "node1", "Terminated")]
    assert failures[0]["detail"] == "MemoryError: out of memory"
    assert summary(failures, 1).startswith("first failed: rank 1 on node2: Exited with exit")


def test_failures_from_mpirun_and_horovodrun_lines():
    mpi = parse_failures(["mpirun noticed that process rank 3 with PID 99 on node node4 "
                          "exited on signal 9 (Killed)."])
    assert mpi == [{"rank": 3, "node": "node4", "reason": "exited on signal 9 (Killed)",
                    "detail": None}]
    gloo = parse_failures(["[1]<stderr>:Killed", "Process 1 exit with status code 137.",
                           "Process 0 exit with status code 143."])
    assert [(f["rank"], f["reason"]) for f in gloo] == [
        (1, "exit status 137 (signal 9)"), (0, "exit status 143 (signal 15)")]
    assert parse_failures(["all fine"]) == [] and "no failed rank" in summary([], 2)


def test_sacct_records_count_restarts():
    records = parse_sacct("5|REQUEUED|00:01:00\n5|REQUEUED|00:01:02\n5|COMPLETED|00:00:40\n"
                          "6_0|RUNNING|00:00:03\n7|CANCELLED by 0|00:00:01\n")
    assert records[-1].state == "CANCELLED"  # the wait loop's parser too: not "0"
    jobs = summarize_records(records)
    assert jobs["5"] == {"state": "COMPLETED", "elapsed": "00:00:40", "restarts": "2"}
    assert jobs["6_0"]["restarts"] == "0" and jobs["7"]["state"] == "CANCELLED"


def test_sweep_grid_and_chain():
    assert parse_grid(["a=1,2", "b=x"]) == [("a=1", "b=x"), ("a=2", "b=x")]
    assert parse_grid(["lr=0.01,0.05", "batch_size=32,64"]) == [
        ("lr=0.01", "batch_size=32"), ("lr=0.01", "batch_size=64"),
        ("lr=0.05", "batch_size=32"), ("lr=0.05", "batch_size=64")]
    with pytest.raises(ConfigError):
        parse_grid(["a"])
    assert parse_chain("stage,train,report") == ("stage", "train", "report")
    assert parse_chain(None) == ("train",)
    for bad in ("report,train", "stage", "train,train", "train,deploy"):
        with pytest.raises(JobSpecError):
            parse_chain(bad)


def test_status_rows_match_runs_on_their_cluster(tmp_path):
    from pathlib import Path

    from hpctrain.slurm.status import rows

    runs = [{"job_id": "1", "cluster": "here", "run_dir": tmp_path / "a", "tasks": None},
            {"job_id": "1", "cluster": "there", "run_dir": tmp_path / "b", "tasks": None},
            {"job_id": "1", "cluster": None, "run_dir": tmp_path / "c", "tasks": None}]
    jobs = {"1": {"state": "COMPLETED", "elapsed": "00:01:00", "restarts": "0"}}
    states = [r[1] for r in rows(runs, jobs, Path(tmp_path), "here")]
    assert states == ["done", "other cluster (there)", "other cluster (not recorded)"]
    unreachable = [r[1] for r in rows(runs, jobs, Path(tmp_path), None)]
    assert unreachable == ["unknown (no Slurm reachable)"] * 3


def test_outcome_line_of_a_run_without_a_test_set(tmp_path):
    """What `submit --wait` prints last: a synthetic run has no test accuracy (n/a)."""
    assert job_outcome(tmp_path, "FAILED") == (False, "test accuracy n/a (None, job FAILED)")
    (tmp_path / "report.json").write_text('{"status": "completed", "test_accuracy": null}')
    assert job_outcome(tmp_path, "COMPLETED") == (True, "test accuracy n/a (completed, job "
                                                    "COMPLETED)")
    (tmp_path / "report.json").write_text('{"status": "completed", "test_accuracy": 0.91234}')
    assert job_outcome(tmp_path, "COMPLETED")[1] == \
        "test accuracy 0.9123 (completed, job COMPLETED)"


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0"], "--nodes must be >= 1"),
    (["epochs=0"], "epochs must be >= 1"),
    (["bogus_key=1"], "unknown key(s) bogus_key"),
    (["data=/nonexistent/x.h5"], "no such data file"),
    (["model=resnet9000"], "model 'resnet9000' unknown"),
    (["--gpus-per-node", "3"], "--gpus-per-node 3: profile embedded nodes have 2 GPU(s)"),
    (["--nodes", "5"], "--nodes 5: profile embedded has 4 nodes"),
    (["--time", "4:00:01"], "--time 4:00:01 is over the partition limit 04:00:00"),
    (["--ntasks-per-node", "2", "--cpus-per-task", "2"], "profile embedded nodes have 2 CPUs"),
    (["--profile", "nosuch"], "no cluster profile 'nosuch'"),
])
def test_the_resolver_refuses_bad_requests_in_one_line(fmnist_h5, tmp_path, monkeypatch,
                                                       args, message):
    """What `hpctrain submit` refuses before sbatch, from its flags through the resolver
    (test_e2e_slurm.py checks on the cluster that a refusal queues nothing)."""
    from conftest import write_config
    from hpctrain.cli import build_parser
    from hpctrain.cli.jobs import _request
    from hpctrain.slurm.request import resolve
    from hpctrain.validation import InputError

    monkeypatch.delenv("HPCTRAIN_PROFILE", raising=False)
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    flags = build_parser().parse_args(["submit", "--config", str(config), "--run-dir",
                                       str(tmp_path / "run"), *args])
    with pytest.raises(InputError) as refused:
        resolve(_request(flags))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()
