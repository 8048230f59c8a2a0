"""`hpctrain status`: this project's runs and their Slurm jobs, from sacct.

Every run directory that `hpctrain submit` or `hpctrain sweep` made holds submission.json
(the job id); sacct says what became of the job. Printed newest first:

    JOB      STATE      ELAPSED   RESTARTS  RUN
    42       done       00:03:10  1         results/fmnist_cnn/20261123-101010-ab12
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

STATES = {  # Slurm state -> what `status` shows
    "PENDING": "queued", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued",
    "REQUEUE_FED": "requeued", "RUNNING": "running", "COMPLETING": "running",
    "SUSPENDED": "running", "COMPLETED": "done", "FAILED": "failed", "TIMEOUT": "failed",
    "CANCELLED": "cancelled", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "PREEMPTED": "requeued", "BOOT_FAIL": "failed", "DEADLINE": "failed",
}


def find_runs(results: Path) -> list[dict]:
    """{job_id, run_dir, submitted_at, tasks} for every submission under `results`."""
    runs = []
    for sub in results.rglob("submission.json"):
        try:
            data = json.loads(sub.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        runs.append({"job_id": str(data["job_id"]), "run_dir": sub.parent,
                     "submitted_at": data.get("submitted_at", 0), "tasks": data.get("tasks")})
    return sorted(runs, key=lambda r: r["submitted_at"], reverse=True)


def parse_sacct(text: str) -> dict[str, dict]:
    """JobID|State|Elapsed lines (sacct -X -P --duplicates) -> {job id: {...}}: a requeued
    job has one record per run; the last is its state, the others count as restarts."""
    out: dict[str, dict] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id, state, elapsed = parts[:3]
        before = out.get(job_id)
        out[job_id] = {"state": state.split()[0] if state else "?", "elapsed": elapsed,
                       "restarts": str(int(before["restarts"]) + 1) if before else "0"}
    return out


def sacct(job_ids: list[str], env: dict) -> dict[str, dict]:
    if not job_ids:
        return {}
    res = subprocess.run(["sacct", "-X", "-n", "-P", "--duplicates", "-j", ",".join(job_ids),
                          "-o", "JobID,State,Elapsed"], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"sacct failed: {' '.join(res.stderr.split())}")
    return parse_sacct(res.stdout)


def rows(runs: list[dict], jobs: dict[str, dict], base: Path) -> list[tuple[str, ...]]:
    out = []
    for run in runs:
        ids = [run["job_id"]] if not run["tasks"] else [
            f"{run['job_id']}_{t}" for t in range(run["tasks"])]
        for job_id in ids:
            info = jobs.get(job_id, {"state": "?", "elapsed": "", "restarts": ""})
            task = job_id.partition("_")[2]
            run_dir = run["run_dir"] / f"task-{task}" if task else run["run_dir"]
            out.append((job_id, STATES.get(info["state"], info["state"].lower()),
                        info["elapsed"], info["restarts"], os.path.relpath(run_dir, base)))
    return out


def format_table(table: list[tuple[str, ...]]) -> str:
    header = ("JOB", "STATE", "ELAPSED", "RESTARTS", "RUN")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]])
                     for r in [header, *table]) + "\n"
