"""`hpctrain submit`: validate, render results/<experiment>/<run-id>/job.sbatch, sbatch it,
and optionally wait for the job and print its report.

Which Slurm cluster: $SLURM_CONF if set; else the embedded cluster if it is up; else the
system's default configuration (a real cluster's login node).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hpctrain import cluster as embedded
from hpctrain.config import check_data, load_config, split_spec
from hpctrain.fsutil import write_json, write_text
from hpctrain.paths import RESULTS_DIR
from hpctrain.reporting import load_report
from hpctrain.sbatch import JobSpec, render_sbatch

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


class SubmitError(RuntimeError):
    pass


def slurm_env() -> dict:
    env = dict(os.environ)
    if "SLURM_CONF" not in env:
        local = embedded.EmbeddedCluster()
        if local.is_up():
            env["SLURM_CONF"] = str(local.slurm_conf)
    return env


def new_run_dir(experiment: str, results: Path = RESULTS_DIR) -> Path:
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return results / experiment / run_id


def prepare(args) -> tuple[JobSpec, Path]:
    """Everything checked before sbatch: config, data file, job geometry."""
    cfg = load_config(args.config, args.overrides)
    check_data(cfg)
    run_dir = Path(args.run_dir).resolve() if args.run_dir else new_run_dir(cfg.experiment)
    venv = Path(args.venv or sys.prefix)
    env_setup = tuple(args.env_setup) if args.env_setup else (
        f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",)
    spec = JobSpec(
        job_name=args.job_name or f"hpctrain-{cfg.experiment}",
        config=_absolute_spec(args.config),
        run_dir=str(run_dir),
        workdir=str(Path.cwd()),
        nodes=args.nodes,
        ntasks_per_node=args.ntasks_per_node,
        cpus_per_task=args.cpus_per_task,
        gpus_per_node=args.gpus_per_node,
        time=args.time,
        partition=args.partition,
        account=args.account,
        env_setup=env_setup,
        extra_args=tuple(args.overrides),
        allow_run_as_root=os.geteuid() == 0,
    ).validate()
    return spec, run_dir


def _absolute_spec(spec: str) -> str:
    path, variant = split_spec(spec)
    return str(path.resolve()) + (f":{variant}" if variant else "")


def submit(args) -> int:
    spec, run_dir = prepare(args)
    script = render_sbatch(spec)
    if args.dry_run:
        sys.stdout.write(script)
        return 0
    if not shutil.which("sbatch"):
        raise SubmitError("sbatch not found: load Slurm, or `hpctrain cluster up` for the "
                          "embedded test cluster")
    env = slurm_env()
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise SubmitError(f"run directory {run_dir} already exists") from None
    job_file = run_dir / "job.sbatch"
    write_text(job_file, script)
    res = subprocess.run(["sbatch", "--parsable", str(job_file)], env=env, capture_output=True,
                         text=True)
    if res.returncode != 0:
        shutil.rmtree(run_dir)  # nothing was queued: leave no run directory behind
        raise SubmitError(f"sbatch refused the job: {' '.join(res.stderr.split())}")
    job_id = res.stdout.strip().split(";")[0]
    write_json(run_dir / "submission.json", {"job_id": job_id, "script": str(job_file),
                                             "slurm_conf": env.get("SLURM_CONF"),
                                             "submitted_at": time.time()})
    print(f"submitted job {job_id}; run dir {run_dir}", flush=True)
    if not args.wait:
        return 0
    state = wait(job_id, env, timeout=args.wait_timeout)
    return summarize(job_id, state, run_dir)


def job_state(job_id: str, env: dict) -> str | None:
    """The job's state from sacct (accounting), falling back to squeue for a queued job."""
    res = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], env=env,
                         capture_output=True, text=True)
    states = [s.split()[0] for s in res.stdout.split() if s.strip()] if res.returncode == 0 \
        else []
    if states:
        return states[-1]
    res = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=env,
                         capture_output=True, text=True)
    return res.stdout.strip() or None


def wait(job_id: str, env: dict, timeout: float, poll: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        state = job_state(job_id, env)
        if state != last and state:
            print(f"job {job_id}: {state}", flush=True)
            last = state
        if state in TERMINAL:
            return state
        time.sleep(poll)
    raise SubmitError(f"job {job_id} not finished after {timeout:.0f} s (last state {last})")


def summarize(job_id: str, state: str, run_dir: Path) -> int:
    report_path = run_dir / "report.json"
    if report_path.exists():
        report = load_report(run_dir)
        print((run_dir / "report.md").read_text(), end="")
        print(f"report: {report_path}")
        ok = state == "COMPLETED" and report["status"] == "completed"
        acc = report["test_accuracy"]
        print(f"test accuracy {'n/a' if acc is None else f'{acc:.4f}'} "
              f"({report['status']}, job {state})")
        return 0 if ok else 1
    log = next(iter(sorted(run_dir.glob("slurm-*.out"))), None)
    print(f"job {job_id} ended {state} without a report", file=sys.stderr)
    if log:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print(f"--- last lines of {log} ---", *tail, sep="\n", file=sys.stderr)
    return 1
