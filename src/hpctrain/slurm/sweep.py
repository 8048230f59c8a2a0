"""`hpctrain sweep`: train one config over a parameter grid, one Slurm job per grid point.

    hpctrain sweep --config jobs/configs/fmnist_cnn.yaml:short \
        --param batch_size=32,64 --param learning_rate=0.001,0.003        # 4 array tasks

Backends: `array` (default) renders jobs/sweep.sbatch, one `#SBATCH --array` job whose task
N trains into <sweep dir>/task-N; `submitit` submits the same tasks with submitit's
`map_array` (a Python function per task, launched by srun --mpi=pmix; the command gives it:
cli/jobs.py's `sweep_task`). Each task's run
directory is its own, so tasks never clobber each other. Every task's config is checked
before anything is queued.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpctrain.atomic import write_text
from hpctrain.experiment import ConfigError, load_config
from hpctrain.slurm.client import SlurmClient, SlurmError
from hpctrain.slurm.profiles import slurm_minutes
from hpctrain.slurm.queue import queue_in_order
from hpctrain.slurm.request import Request, new_run_dir, resolve
from hpctrain.slurm.script import JobSpec, render_sbatch, with_changes
from hpctrain.slurm.submit import DryRun, create_run_dir, write_submission

BACKENDS = ("array", "submitit")


@dataclass(frozen=True)
class Swept:
    """A queued sweep: its array job, its directory (task N trains into task-N/), the tasks'
    overrides; task N's job is `{job_id}_{N}`."""

    job_id: str
    sweep_dir: Path
    tasks: tuple[tuple[str, ...], ...]

    def task_jobs(self) -> list[str]:
        return [f"{self.job_id}_{i}" for i in range(len(self.tasks))]


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


Task = Callable[[str, str, list[str]], dict]  # (config, run dir, overrides) -> result


def sweep(req: Request, params: list[str], backend: str = "array",
          max_parallel: int | None = None, dry_run: bool = False,
          client: SlurmClient | None = None, run_task: Task | None = None) -> Swept | DryRun:
    """Check every task, render and queue the sweep; what was queued, or for a dry run the
    script and Slurm's verdict. The submitit backend runs `run_task` in each srun task."""
    tasks = parse_grid(params)
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} unknown; choose from {', '.join(BACKENDS)}")
    if backend == "submitit" and run_task is None:
        raise ConfigError("the submitit backend needs the function each task runs")
    for task in tasks:  # every task's config must be valid before anything is queued
        load_config(req.config, [*req.overrides, *task])
    cfg = load_config(req.config, list(req.overrides))
    sweep_dir = Path(req.run_dir).resolve() if req.run_dir else new_run_dir(
        f"{cfg.experiment}-sweep")
    limit = f"%{max_parallel}" if max_parallel else ""
    resolved = resolve(req, template="sweep.sbatch", run_dir=sweep_dir)
    spec = with_changes(resolved.spec, array=f"0-{len(tasks) - 1}{limit}",
                        array_args=tuple(tasks),
                        job_name=req.job_name or f"hpctrain-{cfg.experiment}-sweep")
    script = render_sbatch(spec)
    client = client or SlurmClient()
    if dry_run:
        return DryRun((("sweep", script, client.test_only(script)),))
    create_run_dir(sweep_dir, "sweep directory")
    for i in range(len(tasks)):
        (sweep_dir / f"task-{i}").mkdir()  # Slurm opens each task's log there
    write_text(sweep_dir / "sweep.yaml", yaml.safe_dump({
        "config": spec.config, "overrides": list(req.overrides), "backend": backend,
        "tasks": {f"task-{i}": list(t) for i, t in enumerate(tasks)}}, sort_keys=False))
    if backend == "submitit":
        assert run_task is not None
        job_id = _submit_submitit(spec, tasks, sweep_dir, max_parallel, client, run_task)
    else:
        write_text(sweep_dir / "job.sbatch", script)
        try:
            job_id, = queue_in_order(client, [sweep_dir / "job.sbatch"])
        except SlurmError:
            shutil.rmtree(sweep_dir)
            raise
    write_submission(sweep_dir, client, job_id, tasks=len(tasks), backend=backend)
    return Swept(job_id, sweep_dir, tuple(tasks))


def _submit_submitit(spec: JobSpec, tasks, sweep_dir: Path, max_parallel: int | None,
                     client: SlurmClient, run_task: Task) -> str:
    import submitit

    os.environ.update({k: v for k, v in client.env.items() if k == "SLURM_CONF"})
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
        slurm_array_parallelism=max_parallel or len(tasks),
        slurm_additional_parameters=extra)
    jobs = executor.map_array(
        run_task, [spec.config] * len(tasks),
        [str(sweep_dir / f"task-{i}") for i in range(len(tasks))],
        [[*spec.extra_args, *t] for t in tasks])
    return jobs[0].job_id.split("_")[0]
