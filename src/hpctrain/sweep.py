"""`hpctrain sweep`: train one config over a parameter grid, one Slurm job per grid point.

    hpctrain sweep --config jobs/configs/fmnist_cnn.yaml:short \
        --param batch_size=32,64 --param learning_rate=0.001,0.003        # 4 array tasks

Backends: `array` (default) renders jobs/sweep.sbatch, one `#SBATCH --array` job whose task
N trains into <sweep dir>/task-N; `submitit` submits the same tasks with submitit's
`map_array` (a Python function per task, launched by srun --mpi=pmix). Each task's run
directory is its own, so tasks never clobber each other. Every task's config is checked
before anything is queued.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from hpctrain.config import ConfigError, load_config
from hpctrain.fsutil import write_json, write_text
from hpctrain.profiles import slurm_minutes
from hpctrain.sbatch import render_sbatch
from hpctrain.submit import (
    SubmitError,
    create_run_dir,
    new_run_dir,
    outcome,
    prepare,
    require_sbatch,
    sbatch,
    slurm_env,
    test_only,
    wait,
)


def parse_grid(params: list[str]) -> list[tuple[str, ...]]:
    """["a=1,2", "b=x,y"] -> [("a=1", "b=x"), ("a=1", "b=y"), ("a=2", "b=x"), ...]."""
    axes = []
    for param in params:
        key, sep, values = param.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--param {param!r} is not key=value1,value2,...")
        axes.append([f"{key}={v}" for v in values.split(",")])
    if not axes:
        raise ConfigError("a sweep needs at least one --param key=v1,v2,...")
    return list(itertools.product(*axes))


def sweep(args) -> int:
    tasks = parse_grid(args.param)
    for task in tasks:  # every task's config must be valid before anything is queued
        load_config(args.config, [*args.overrides, *task])
    cfg = load_config(args.config, args.overrides)
    sweep_dir = Path(args.run_dir).resolve() if args.run_dir else new_run_dir(
        f"{cfg.experiment}-sweep")
    limit = f"%{args.max_parallel}" if args.max_parallel else ""
    spec, _, profile, _ = prepare(args, template="sweep.sbatch", run_dir=sweep_dir)
    spec = replace(spec, array=f"0-{len(tasks) - 1}{limit}", array_args=tuple(tasks),
                   job_name=args.job_name or f"hpctrain-{cfg.experiment}-sweep")
    script = render_sbatch(spec)
    env = slurm_env()
    if args.dry_run:
        sys.stdout.write(script)
        print(f"# sbatch --test-only: {test_only(script, env)}", file=sys.stderr)
        return 0
    require_sbatch()
    create_run_dir(sweep_dir, "sweep directory")
    for i in range(len(tasks)):
        (sweep_dir / f"task-{i}").mkdir()  # Slurm opens each task's log there
    write_text(sweep_dir / "sweep.yaml", yaml.safe_dump({
        "config": spec.config, "overrides": list(args.overrides), "backend": args.backend,
        "tasks": {f"task-{i}": list(t) for i, t in enumerate(tasks)}}, sort_keys=False))
    if args.backend == "submitit":
        job_id = _submit_submitit(spec, profile, tasks, sweep_dir, args, env)
    else:
        write_text(sweep_dir / "job.sbatch", script)
        try:
            job_id = sbatch(sweep_dir / "job.sbatch", env)
        except SubmitError:
            shutil.rmtree(sweep_dir)
            raise
    write_json(sweep_dir / "submission.json", {
        "job_id": job_id, "tasks": len(tasks), "backend": args.backend,
        "slurm_conf": env.get("SLURM_CONF"), "submitted_at": time.time()})
    print(f"submitted sweep job {job_id} with {len(tasks)} tasks; sweep dir {sweep_dir}",
          flush=True)
    if not args.wait:
        return 0
    return _wait_all(job_id, tasks, sweep_dir, env, args.wait_timeout)


def _wait_all(job_id: str, tasks, sweep_dir: Path, env: dict, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    failed = 0
    for i, task in enumerate(tasks):
        state = wait(f"{job_id}_{i}", env, timeout=max(1.0, deadline - time.monotonic()))
        run_dir = sweep_dir / f"task-{i}"
        ok, line = outcome(run_dir, state)
        failed += not ok
        print(f"task {i} ({' '.join(task)}): {line}, {run_dir}")
    return 1 if failed else 0


def train_task(config: str, run_dir: str, overrides: list[str]) -> dict:
    """One sweep task under submitit (runs in every srun task of the job)."""
    from hpctrain.train import main

    code = main(["--config", config, "--run-dir", run_dir, "--resume", *overrides])
    if code != 0:
        raise RuntimeError(f"hpctrain train exited with {code} (see {run_dir})")
    return {"run_dir": run_dir}


def _submit_submitit(spec, profile, tasks, sweep_dir: Path, args, env) -> str:
    import submitit

    os.environ.update({k: v for k, v in env.items() if k == "SLURM_CONF"})
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster="slurm")
    setup = [*spec.env_setup, "export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=1"]
    if spec.allow_run_as_root:
        setup.append("export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
    extra = {k: v for k, v in (("account", spec.account), ("qos", spec.qos),
                               ("constraint", spec.constraint)) if v}
    if spec.gpus_per_node:
        extra["gres"] = f"{spec.gres_name}:{spec.gpus_per_node}"
    executor.update_parameters(
        name=spec.job_name, nodes=spec.nodes, tasks_per_node=spec.ntasks_per_node,
        cpus_per_task=spec.cpus_per_task, timeout_min=max(1, int(slurm_minutes(spec.time))),
        slurm_partition=spec.partition, slurm_setup=setup, slurm_srun_args=["--mpi=pmix"],
        slurm_array_parallelism=args.max_parallel or len(tasks),
        slurm_additional_parameters=extra)
    jobs = executor.map_array(
        train_task, [spec.config] * len(tasks),
        [str(sweep_dir / f"task-{i}") for i in range(len(tasks))],
        [[*spec.extra_args, *t] for t in tasks])
    return jobs[0].job_id.split("_")[0]

