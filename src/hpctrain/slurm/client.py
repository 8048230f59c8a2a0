"""The one Slurm client: sbatch, sbatch --test-only, scancel, sacct and squeue, with one parser
of job states and one wait loop. Everything else in hpctrain talks to Slurm through it.

Which Slurm cluster: $SLURM_CONF if set; else the embedded cluster if it is up; else the
system's default configuration (a real cluster's login node).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}

# ends of a run after which Slurm itself queues a job with --requeue again
REQUEUED_BY_SLURM = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}


class SlurmError(RuntimeError):
    """Slurm refused or failed a request; the message is one line."""


def slurm_env() -> dict[str, str]:
    """The environment for Slurm commands: $SLURM_CONF, else the embedded cluster if up."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env:
        from hpctrain.cluster.embedded import EmbeddedCluster

        local = EmbeddedCluster()
        if local.is_up():
            env["SLURM_CONF"] = str(local.slurm_conf)
    return env


@dataclass(frozen=True)
class JobRecord:
    """One sacct record; a requeued job has one per run (`sacct --duplicates`)."""

    job_id: str
    state: str  # the first word: sacct prints "CANCELLED by 0" for a cancelled job
    elapsed: str = ""


def parse_sacct(text: str) -> list[JobRecord]:
    """Lines of `sacct -X -n -P -o JobID,State,Elapsed` -> records, in sacct's order."""
    records = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip():
            continue
        state = parts[1].split()[0] if parts[1].split() else "?"
        records.append(JobRecord(parts[0].strip(), state, parts[2] if len(parts) > 2 else ""))
    return records


def _unix(stamp: str) -> float | None:
    """sacct's local time (2026-11-24T02:33:01) -> Unix seconds; None for Unknown/None."""
    try:
        return time.mktime(time.strptime(stamp.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def parse_job_times(text: str) -> dict[str, dict]:
    """Lines of `sacct -X -n -P -o JobID,Submit,Start,End` -> {job id: times}."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 4 and parts[0].strip():
            out[parts[0].strip()] = {k: _unix(v) for k, v in
                                     zip(("submit", "start", "end"), parts[1:], strict=True)}
    return out


class SlurmClient:
    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(env) if env is not None else slurm_env()

    def _run(self, argv: list[str], stdin: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
        if not shutil.which(argv[0], path=self.env.get("PATH")):
            raise SlurmError(f"{argv[0]} not found: load Slurm, or `hpctrain cluster up` for "
                             "the embedded test cluster")
        return subprocess.run(argv, input=stdin, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    @staticmethod
    def _one_line(res: subprocess.CompletedProcess) -> str:
        return " ".join((res.stderr + res.stdout).split())

    def sbatch(self, job_file: os.PathLike | str, *options: str) -> str:
        """Queue a job script; its job id."""
        res = self._run(["sbatch", "--parsable", *options, str(job_file)])
        if res.returncode != 0:
            raise SlurmError(f"sbatch refused the job: {self._one_line(res)}")
        return res.stdout.strip().split(";")[0]

    def test_only(self, script: str) -> str:
        """sbatch --test-only on a rendered script: Slurm's own verdict, nothing queued."""
        res = self._run(["sbatch", "--test-only"], stdin=script)
        if res.returncode != 0:
            raise SlurmError(f"sbatch --test-only refused the job: {self._one_line(res)}")
        return self._one_line(res)

    def scancel(self, *job_ids: str, signal: str | None = None) -> None:
        if job_ids:
            self._run(["scancel", *([f"--signal={signal}"] if signal else []), *job_ids])

    def cluster_name(self) -> str | None:
        """ClusterName of the cluster these commands reach (to tell apart job ids that repeat
        across clusters), or None if Slurm cannot say."""
        try:
            res = self._run(["scontrol", "show", "config"], timeout=30)
        except (SlurmError, subprocess.TimeoutExpired):
            return None
        for line in res.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ClusterName":
                return value.strip() or None
        return None

    def records(self, job_ids: list[str], duplicates: bool = False) -> list[JobRecord]:
        """sacct records of the jobs (array tasks as `<job>_<task>`)."""
        if not job_ids:
            return []
        res = self._run(["sacct", "-X", "-n", "-P", *(["--duplicates"] if duplicates else []),
                         "-j", ",".join(job_ids), "-o", "JobID,State,Elapsed"])
        if res.returncode != 0:
            raise SlurmError(f"sacct failed: {self._one_line(res)}")
        return parse_sacct(res.stdout)

    def job_times(self, job_ids: list[str]) -> dict[str, dict]:
        """{job id: {"submit", "start", "end"}} in Unix seconds (None where not yet) from
        accounting; the last run of a requeued job."""
        if not job_ids:
            return {}
        res = self._run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                         "-o", "JobID,Submit,Start,End"])
        if res.returncode != 0:
            raise SlurmError(f"sacct failed: {self._one_line(res)}")
        return parse_job_times(res.stdout)

    def state(self, job_id: str) -> str | None:
        """The job's state from accounting, falling back to squeue for a job just queued."""
        try:
            found = [r.state for r in self.records([job_id]) if r.job_id == job_id]
        except SlurmError:
            found = []
        queued = None
        if not found or found[-1] in TERMINAL:
            res = self._run(["squeue", "-h", "-j", job_id, "-o", "%T"])
            queued = res.stdout.strip().split()[0] if res.stdout.strip() else None
        if not found:
            return queued
        # a run that Slurm requeues (NODE_FAIL) ends its record before the next one begins:
        # the job is not over while the queue still holds it for another run, also while
        # the failed run's processes are being killed (COMPLETING)
        if queued and queued not in TERMINAL and (queued != "COMPLETING"
                                                  or found[-1] in REQUEUED_BY_SLURM):
            return queued
        return found[-1]

    def wait(self, job_id: str, timeout: float, poll: float = 2.0,
             on_change: Callable[[str, str], None] | None = None) -> str:
        """Poll until the job reaches a terminal state; that state. `on_change(job, state)`
        is called whenever the state changes (PENDING, RUNNING, ...)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state and state != last:
                last = state
                if on_change:
                    on_change(job_id, state)
            if state in TERMINAL:
                return state
            time.sleep(poll)
        raise SlurmError(f"job {job_id} not finished after {timeout:.0f} s (last state {last})")


def print_change(job_id: str, state: str) -> None:
    print(f"job {job_id}: {state}", flush=True)
