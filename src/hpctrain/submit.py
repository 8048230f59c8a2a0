"""`hpctrain submit`: validate against the cluster profile, render
results/<experiment>/<run-id>/job.sbatch (and stage.sbatch / report.sbatch for a chain),
sbatch it, and optionally wait for the job and print its report.

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
from dataclasses import replace
from pathlib import Path

from hpctrain import cluster as embedded
from hpctrain.config import check_data, load_config, split_spec
from hpctrain.fsutil import write_json, write_text
from hpctrain.paths import RESULTS_DIR
from hpctrain.profiles import Profile, load_profile, slurm_minutes
from hpctrain.reporting import load_report
from hpctrain.sbatch import JobSpec, JobSpecError, render_sbatch

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


JOB_KEYS = ("nodes", "ntasks_per_node", "cpus_per_task", "gpus_per_node", "time", "partition",
            "account", "qos", "constraint", "launcher", "signal_seconds", "max_restarts")


def job_settings(args, profile: Profile) -> dict:
    """Job geometry and placement: the profile's values, overridden by explicit flags."""
    return {k: getattr(args, k) if getattr(args, k, None) is not None else getattr(profile, k)
            for k in JOB_KEYS}


def check_request(spec: JobSpec, profile: Profile) -> None:
    """Refuse what the cluster cannot run, in one line, before anything is queued."""
    spec.validate()
    p = profile.name
    if profile.max_nodes is not None and spec.nodes > profile.max_nodes:
        raise JobSpecError(f"--nodes {spec.nodes}: profile {p} has {profile.max_nodes} nodes")
    if spec.gpus_per_node > profile.node_gpus:
        raise JobSpecError(f"--gpus-per-node {spec.gpus_per_node}: profile {p} nodes have "
                           f"{profile.node_gpus} GPU(s)")
    cpus = spec.ntasks_per_node * spec.cpus_per_task
    if profile.node_cpus is not None and cpus > profile.node_cpus:
        raise JobSpecError(f"{spec.ntasks_per_node} tasks x {spec.cpus_per_task} CPUs per node "
                           f"= {cpus}: profile {p} nodes have {profile.node_cpus} CPUs")
    if profile.max_time and slurm_minutes(spec.time) > slurm_minutes(profile.max_time):
        raise JobSpecError(f"--time {spec.time} is over the partition limit "
                           f"{profile.max_time} (profile {p})")
    if spec.signal_seconds and spec.signal_seconds >= slurm_minutes(spec.time) * 60:
        raise JobSpecError(f"signal {spec.signal_seconds} s before the limit does not fit in "
                           f"--time {spec.time}")


def prepare(args, template: str = "train.sbatch", run_dir: Path | None = None,
            check_data_file: bool = True) -> tuple[JobSpec, Path, Profile, object]:
    """Everything checked before sbatch: profile, config, data file, job geometry."""
    profile = load_profile(args.profile)
    cfg = load_config(args.config, args.overrides)
    if check_data_file:
        check_data(cfg)
    run_dir = run_dir or (Path(args.run_dir).resolve() if args.run_dir
                          else new_run_dir(cfg.experiment))
    if args.env_setup:
        env_setup = tuple(args.env_setup)
    elif profile.env_setup:
        env_setup = tuple(profile.env_setup)
    else:
        venv = Path(args.venv or sys.prefix)
        env_setup = (f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",)
    spec = JobSpec(
        job_name=args.job_name or f"hpctrain-{cfg.experiment}",
        config=_absolute_spec(args.config),
        run_dir=str(run_dir),
        workdir=str(Path.cwd()),
        gres_name=profile.gres_name,
        scratch=profile.scratch if not cfg.synthetic else None,
        data=str(Path(cfg.data).resolve()) if cfg.data else "",
        env_setup=env_setup,
        extra_sbatch=tuple(profile.extra_sbatch),
        extra_args=tuple(args.overrides),
        allow_run_as_root=os.geteuid() == 0,
        template=template,
        **job_settings(args, profile),
    )
    check_request(spec, profile)
    return spec, run_dir, profile, cfg


def _absolute_spec(spec: str) -> str:
    path, variant = split_spec(spec)
    return str(path.resolve()) + (f":{variant}" if variant else "")


def require_sbatch() -> None:
    if not shutil.which("sbatch"):
        raise SubmitError("sbatch not found: load Slurm, or `hpctrain cluster up` for the "
                          "embedded test cluster")


def create_run_dir(path: Path, what: str = "run directory") -> None:
    """The new run (or sweep) directory; an existing one is never reused."""
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise SubmitError(f"{what} {path} already exists") from None


def test_only(script: str, env: dict) -> str:
    """sbatch --test-only on the rendered script: Slurm's own verdict, nothing queued."""
    require_sbatch()
    res = subprocess.run(["sbatch", "--test-only"], input=script, env=env,
                         capture_output=True, text=True)
    verdict = " ".join((res.stderr + res.stdout).split())
    if res.returncode != 0:
        raise SubmitError(f"sbatch --test-only refused the job: {verdict}")
    return verdict


def sbatch(job_file: Path, env: dict, *extra: str) -> str:
    """Queue a job script; its job id."""
    res = subprocess.run(["sbatch", "--parsable", *extra, str(job_file)], env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SubmitError(f"sbatch refused the job: {' '.join(res.stderr.split())}")
    return res.stdout.strip().split(";")[0]


CHAIN_STEPS = ("stage", "train", "report")


def parse_chain(value: str | None) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in (value or "train").split(",") if s.strip())
    if "train" not in steps or any(s not in CHAIN_STEPS for s in steps) or \
            list(steps) != sorted(steps, key=CHAIN_STEPS.index) or len(set(steps)) != len(steps):
        raise JobSpecError(f"--chain {value!r}: a subsequence of stage,train,report with train")
    return steps


def submit(args) -> int:
    chain = parse_chain(args.chain)
    if "stage" in chain:
        if not (args.stage_source and args.stage_dataset):
            raise JobSpecError("--chain stage needs --stage-source and --stage-dataset")
        if not Path(args.stage_source).exists():
            raise JobSpecError(f"--stage-source {args.stage_source}: no such file or directory")
    spec, run_dir, _, cfg = prepare(args, check_data_file="stage" not in chain)
    if "stage" in chain and not cfg.data:
        raise JobSpecError("--chain stage: the config has no data file to stage into")
    specs = {"train": spec}
    one_task = dict(nodes=1, ntasks_per_node=1, cpus_per_task=1, gpus_per_node=0)
    if "stage" in chain:
        specs["stage"] = replace(spec, template="stage.sbatch", job_name=spec.job_name + "-stage",
                                 stage_dataset=args.stage_dataset,
                                 stage_source=str(Path(args.stage_source).resolve()), **one_task)
    if "report" in chain:
        specs["report"] = replace(spec, template="report.sbatch", time="00:10:00",
                                  job_name=spec.job_name + "-report", **one_task)
    scripts = {step: render_sbatch(specs[step]) for step in chain}
    env = slurm_env()
    if args.dry_run:
        for step in chain:
            sys.stdout.write(scripts[step])
            print(f"# {step}: sbatch --test-only: {test_only(scripts[step], env)}",
                  file=sys.stderr)
        return 0
    require_sbatch()
    create_run_dir(run_dir)
    job_ids: dict[str, str] = {}
    try:
        for step in chain:
            job_file = run_dir / ("job.sbatch" if step == "train" else f"{step}.sbatch")
            write_text(job_file, scripts[step])
            # a failed step cancels the rest of the chain rather than leaving it pending
            after = [f"--dependency=afterok:{job_ids[p]}" for p in job_ids][-1:]
            after += ["--kill-on-invalid-dep=yes"] if after else []
            job_ids[step] = sbatch(job_file, env, *after)
    except SubmitError:
        for job_id in job_ids.values():  # an incomplete chain must not run
            subprocess.run(["scancel", job_id], env=env, capture_output=True)
        if not job_ids:
            shutil.rmtree(run_dir)  # nothing was queued: leave no run directory behind
        raise
    job_id = job_ids["train"]
    write_json(run_dir / "submission.json", {
        "job_id": job_id, "jobs": job_ids, "script": str(run_dir / "job.sbatch"),
        "slurm_conf": env.get("SLURM_CONF"), "submitted_at": time.time()})
    print(f"submitted job {job_id}; run dir {run_dir}" + (
        "" if len(chain) == 1 else
        f" (chain {' -> '.join(f'{s} {job_ids[s]}' for s in chain)}, afterok)"), flush=True)
    if not args.wait:
        return 0
    last = job_ids[chain[-1]]
    state = wait(last, env, timeout=args.wait_timeout)
    if last != job_id:
        state = job_state(job_id, env) or state
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


def outcome(run_dir: Path, state: str) -> tuple[bool, str]:
    """(did the job and the run complete, "test accuracy X (status, job STATE)")."""
    path = run_dir / "report.json"
    report = load_report(run_dir) if path.is_file() else {}
    ok = state == "COMPLETED" and report.get("status") == "completed"
    acc = report.get("test_accuracy")
    return ok, (f"test accuracy {'n/a' if acc is None else f'{acc:.4f}'} "
                f"({report.get('status')}, job {state})")


def summarize(job_id: str, state: str, run_dir: Path) -> int:
    report_path = run_dir / "report.json"
    if report_path.exists():
        print((run_dir / "report.md").read_text(), end="")
        print(f"report: {report_path}")
        ok, line = outcome(run_dir, state)
        print(line)
        return 0 if ok else 1
    log = next(iter(sorted(run_dir.glob("slurm-*.out"))), None)
    print(f"job {job_id} ended {state} without a report", file=sys.stderr)
    if log:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print(f"--- last lines of {log} ---", *tail, sep="\n", file=sys.stderr)
    return 1
