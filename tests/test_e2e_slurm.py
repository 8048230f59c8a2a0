"""End to end on the real embedded Slurm cluster: hpctrain submit --wait -> sbatch ->
horovodrun -> 2 Horovod ranks on 2 logical nodes -> report, and what is refused before
sbatch. Nothing is mocked."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from conftest import FLOAT16, SHORT, VENV_BIN, check_tensorboard, hpctrain, write_config

pytestmark = pytest.mark.slurm


@pytest.mark.slow(reason="a 2-node job under horovodrun in float16, pictures drawn")
def test_submit_two_nodes_to_report(slurm_cluster, fmnist_h5, weird_tmp_path):
    """Everything under a directory named to break shells, started by horovodrun --gloo
    (srun starts the long jobs and the studies, mpirun the image-tree chain), in float16 with
    loss scaling (`hpctrain train` turns oneDNN off before TensorFlow loads), two epochs with
    a cosine schedule: the ranks stay in sync, the pictures are predicted on both nodes and
    drawn by rank 0, TensorBoard's files, the report."""
    config = write_config(weird_tmp_path / "exp.yaml", fmnist_h5, pictures=True)
    run_dir = weird_tmp_path / "run"
    env = {"SLURM_CONF": str(slurm_cluster.slurm_conf)}
    res = hpctrain("submit", "--config", str(config), "--nodes", "2", "--ntasks-per-node", "1",
                   "--gpus-per-node", "1", "--launcher", "horovodrun", "--run-dir",
                   str(run_dir), "--wait", *SHORT, *FLOAT16, env=env, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"report: {run_dir}/report.json" in res.stdout
    # the line to open it in TensorBoard, the weird path quoted for a shell
    assert f"tensorboard: tensorboard --logdir {shlex.quote(str(run_dir))}" in res.stdout
    assert "test accuracy" in res.stdout

    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "completed"
    assert report["ranks"] == 2
    # Slurm picks any 2 of the cluster's nodes (CI once got node2 and node3)
    assert report["nodes"] == 2 and len(set(report["node_names"])) == 2
    assert all(n.startswith("node") for n in report["node_names"])
    assert len(set(report["rank_nodes"])) == 2  # one rank on each of 2 nodes
    assert report["launcher"] == "horovodrun"
    assert report["ranks_in_sync"]["ok"] is True
    assert len(report["ranks_in_sync"]["weight_sha256"]) == 2
    assert report["training"]["precision"] == "mixed_float16"
    assert report["test_accuracy"] > 0.3  # chance is 0.1; two short epochs of SGD
    assert report["slurm"]["job_id"] and report["slurm"]["num_nodes"] == 2
    assert report["images_per_s"]["mean"] > 0 and report["startup_s"] > 0
    assert report["versions"]["horovod"] == "0.28.1"
    assert report["versions"]["keras"].startswith("2.")
    hw = report["hardware"]  # what the run ran on and how its ranks talked
    assert hw["node"]["model"] and hw["node"]["cpus"] >= 1 and hw["node"]["gpus"] == []
    backend = hw["horovod"]["controller"]  # CPU tensors: reduced by the controller itself
    assert backend in ("MPI", "Gloo") and hw["horovod"]["tensor_ops"] == backend
    assert f"- Horovod: {backend} controller, {backend} allreduce" in \
        (run_dir / "report.md").read_text()
    for name in ("job.sbatch", "config.json", "metrics.jsonl", "report.md", "submission.json"):
        assert (run_dir / name).is_file(), name
    job = report["slurm"]["job_id"]
    pictures = report["pictures"]["files"]  # predicted on both nodes, drawn by rank 0
    assert set(pictures) == {"curves", "confusion", "mistakes", "correct"}
    assert all((run_dir / f).read_bytes()[:4] == b"\x89PNG" for f in pictures.values())
    assert sum(map(sum, report["pictures"]["confusion"])) == 1000  # the whole test set
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["lr"] < rows[0]["lr"]  # the schedule decayed after the warm-up
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_s", "images_per_s"} <= set(
        rows[0])
    assert (run_dir / "checkpoints" / "epoch-0002" / "state.json").is_file()
    assert not list(run_dir.rglob(".*tmp*"))  # no temporary files left behind
    # TensorBoard: the epoch's scalars as metrics.jsonl has them, the pictures as images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = check_tensorboard(run_dir)
    assert "step_time_ms/allreduce" in points  # 2 ranks: the allreduce has a share
    reached = {f"time_to_accuracy_s/{k}" for k, v in report["time_to_accuracy_s"].items()
               if v is not None}
    assert reached == {tag for tag in points if tag.startswith("time_to_accuracy_s/")}
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {f"pictures/{name}" for name in pictures}

    sacct = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "State,NNodes"],
                           env=slurm_cluster.env(), capture_output=True, text=True, check=True)
    assert sacct.stdout.strip() == "COMPLETED|2"
    assert not (weird_tmp_path / "INJECTED").exists()


def test_a_bad_request_is_refused_before_sbatch(slurm_cluster, fmnist_h5, tmp_path):
    """One line, exit 2, no run directory and nothing queued (every refusal the resolver
    makes is a unit test in test_jobsystem_units.py)."""
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    args, message = ["--nodes", "5"], "--nodes 5: profile embedded has 4 nodes"
    env = slurm_cluster.env()
    before = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID"], env=env,
                            capture_output=True, text=True, check=True).stdout
    res = hpctrain("submit", "--config", str(config), "--run-dir", str(tmp_path / "run"), *args,
                   env={"SLURM_CONF": str(slurm_cluster.slurm_conf)})
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "run").exists()
    after = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID"], env=env,
                           capture_output=True, text=True, check=True).stdout
    assert before == after  # nothing was queued


def test_sbatch_refusal_leaves_nothing(slurm_cluster, fmnist_h5, tmp_path):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    res = hpctrain("submit", "--config", str(config), "--partition", "nosuch",
                   "--run-dir", str(tmp_path / "run"),
                   env={"SLURM_CONF": str(slurm_cluster.slurm_conf)})
    assert res.returncode == 1
    assert "sbatch refused the job" in res.stderr and "partition" in res.stderr.lower()
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    res = hpctrain("submit", "--config", str(config), "--run-dir", str(tmp_path / "run"),
                   env={"SLURM_CONF": str(slurm_cluster.slurm_conf)})
    assert res.returncode == 1 and "already exists" in res.stderr


def test_dry_run_submits_nothing(slurm_cluster, fmnist_h5, tmp_path):
    config = write_config(tmp_path / "exp.yaml", fmnist_h5)
    env = slurm_cluster.env()
    before = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID"], env=env,
                            capture_output=True, text=True, check=True).stdout
    res = hpctrain("submit", "--config", str(config), "--nodes", "2", "--dry-run",
                   "--run-dir", str(tmp_path / "run"),
                   env={"SLURM_CONF": str(slurm_cluster.slurm_conf)}, check=True)
    assert res.stdout.startswith("#!/bin/bash\n#SBATCH")
    assert "--nodes=2" in res.stdout and "srun --mpi=pmix" in res.stdout
    # Slurm's own verdict on the script, without queueing it
    assert "sbatch --test-only: sbatch: Job" in res.stderr and "node[1-2]" in res.stderr
    assert not (tmp_path / "run").exists()
    after = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID"], env=env,
                           capture_output=True, text=True, check=True).stdout
    assert before == after
    res = hpctrain("submit", "--config", str(config), "--dry-run", "--partition", "nosuch",
                   "--run-dir", str(tmp_path / "run"),
                   env={"SLURM_CONF": str(slurm_cluster.slurm_conf)})
    assert res.returncode == 1 and "sbatch --test-only refused the job" in res.stderr


def _squeue_state(job_id: str, env: dict) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=env,
                          capture_output=True, text=True).stdout.strip()


def test_wait_on_a_cancelled_job_returns_promptly(slurm_cluster, tmp_path):
    """`submit --wait` on a job cancelled with scancel ends within seconds, non-zero, saying
    CANCELLED (sacct prints "CANCELLED by 0"). `hpctrain status` then shows that run as
    cancelled, and runs recorded for another cluster (same job id) as such."""
    results = tmp_path / "results"
    run_dir = results / "long" / "run"
    env = {**os.environ, "SLURM_CONF": str(slurm_cluster.slurm_conf)}
    proc = subprocess.Popen(
        [str(VENV_BIN / "hpctrain"), "submit", "--config",
         "jobs/configs/synthetic_resnet20.yaml", "--nodes", "1", "--run-dir", str(run_dir),
         "--wait", "--wait-timeout", "600", "epochs=50"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "submission.json").is_file():
            assert time.monotonic() < deadline and proc.poll() is None, "nothing submitted"
            time.sleep(0.1)
        job_id = json.loads((run_dir / "submission.json").read_text())["job_id"]
        while _squeue_state(job_id, env) != "RUNNING":
            assert time.monotonic() < deadline and proc.poll() is None, "job never ran"
            time.sleep(0.2)
        cancelled_at = time.monotonic()
        subprocess.run(["scancel", job_id], env=env, check=True)
        out, _ = proc.communicate(timeout=60)
        assert time.monotonic() - cancelled_at < 60
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert f"job {job_id}: CANCELLED" in out, out

    for name, cluster in (("elsewhere", "another_cluster"), ("unrecorded", None)):
        other = results / "old" / name
        other.mkdir(parents=True)
        sub = {"job_id": job_id, "submitted_at": 1.0, **({"cluster": cluster} if cluster else {})}
        (other / "submission.json").write_text(json.dumps(sub))
    status = hpctrain("status", "--results", str(results), env=env, cwd=tmp_path,
                      check=True).stdout
    rows = {line.split()[-1]: line for line in status.splitlines()[1:]}
    assert set(rows) == {"results/long/run", "results/old/elsewhere", "results/old/unrecorded"}
    assert rows["results/long/run"].split()[1] == "cancelled", status
    assert "other cluster (another_cluster)" in rows["results/old/elsewhere"]
    assert "other cluster (not recorded)" in rows["results/old/unrecorded"]
