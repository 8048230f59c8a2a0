"""`hpctrain status`: this project's runs and their Slurm jobs, from sacct.

Every run directory that `hpctrain submit` or `hpctrain sweep` made holds submission.json
(the job id); sacct says what became of the job. Printed newest first:

    JOB      STATE      ELAPSED   RESTARTS  RUN
    42       done       00:03:10  1         results/fmnist_cnn/20261123-101010-ab12
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hpctrain.slurm.client import JobRecord, SlurmClient

STATES = {  # Slurm state -> what `status` shows
    "PENDING": "queued", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued",
    "REQUEUE_FED": "requeued", "RUNNING": "running", "COMPLETING": "running",
    "SUSPENDED": "running", "COMPLETED": "done", "FAILED": "failed", "TIMEOUT": "failed",
    "CANCELLED": "cancelled", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "PREEMPTED": "requeued", "BOOT_FAIL": "failed", "DEADLINE": "failed",
}


def find_runs(results: Path) -> list[dict]:
    """{job_id, cluster, run_dir, submitted_at, tasks} for every submission under
    `results`, newest first."""
    runs = []
    for sub in results.rglob("submission.json"):
        try:
            data = json.loads(sub.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        runs.append({"job_id": str(data["job_id"]), "cluster": data.get("cluster"),
                     "run_dir": sub.parent, "submitted_at": data.get("submitted_at", 0),
                     "tasks": data.get("tasks")})
    return sorted(runs, key=lambda r: r["submitted_at"], reverse=True)


def summarize_records(records: list[JobRecord]) -> dict[str, dict]:
    """{job id: {state, elapsed, restarts}}: a requeued job has one record per run
    (sacct --duplicates); the last is its state, the others count as restarts."""
    out: dict[str, dict] = {}
    for r in records:
        before = out.get(r.job_id)
        out[r.job_id] = {"state": r.state, "elapsed": r.elapsed,
                         "restarts": str(int(before["restarts"]) + 1) if before else "0"}
    return out


def job_ids(run: dict) -> list[str]:
    if not run["tasks"]:
        return [run["job_id"]]
    return [f"{run['job_id']}_{t}" for t in range(run["tasks"])]


def rows(runs: list[dict], jobs: dict[str, dict], base: Path,
         cluster: str | None) -> list[tuple[str, ...]]:
    """One row per job (array tasks each); runs submitted to another cluster (or with no
    cluster recorded) are shown as such: their job ids mean other jobs here."""
    out: list[tuple[str, ...]] = []
    for run in runs:
        here = cluster is not None and run["cluster"] == cluster
        for job_id in job_ids(run):
            info = {"elapsed": "", "restarts": ""}
            if here:
                info = jobs.get(job_id, {"state": "?", "elapsed": "", "restarts": ""})
                state = STATES.get(info["state"], info["state"].lower())
            elif cluster is None:
                state = "unknown (no Slurm reachable)"
            elif run["cluster"]:
                state = f"other cluster ({run['cluster']})"
            else:
                state = "other cluster (not recorded)"
            task = job_id.partition("_")[2]
            run_dir = run["run_dir"] / f"task-{task}" if task else run["run_dir"]
            out.append((job_id, state, info["elapsed"], info["restarts"],
                        os.path.relpath(run_dir, base)))
    return out


def status_table(results: Path, last: int, client: SlurmClient | None = None) -> str:
    """The table `hpctrain status` prints."""
    client = client or SlurmClient()
    runs = find_runs(results)[:last]
    cluster = client.cluster_name()
    ids = [j for run in runs if cluster is not None and run["cluster"] == cluster
           for j in job_ids(run)]
    jobs = summarize_records(client.records(ids, duplicates=True))
    return format_table(rows(runs, jobs, Path.cwd(), cluster))


def format_table(table: list[tuple[str, ...]]) -> str:
    header = ("JOB", "STATE", "ELAPSED", "RESTARTS", "RUN")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]])
                     for r in [header, *table]) + "\n"
