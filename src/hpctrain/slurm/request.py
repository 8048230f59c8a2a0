"""A job request, resolved once: cluster profile + experiment config + overrides -> one
checked `Resolved` (the JobSpec to render, the config, the profile, the run directory).

    request = Request(config="jobs/configs/fmnist_cnn.yaml:short", job=JobOptions(nodes=2))
    resolved = resolve(request)          # ConfigError / ProfileError / JobSpecError, one line

Order: the profile gives job defaults, explicit job options override them; the experiment
config is loaded with its overrides and its data file checked; the JobSpec is built and
checked against what the profile's nodes and partition offer. Nothing is queued here.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpctrain.data.layout import check_data
from hpctrain.experiment import TrainConfig, load_config, split_spec
from hpctrain.resources import results_dir
from hpctrain.slurm.job_options import JobOptions
from hpctrain.slurm.profiles import Profile, load_profile, slurm_minutes
from hpctrain.slurm.script import JobSpec, JobSpecError, make_spec


@dataclass(frozen=True)
class Request:
    config: str  # experiment YAML, optionally FILE:variant
    overrides: tuple[str, ...] = ()  # key=value for the experiment config
    profile: str | None = None  # name or path; None: $HPCTRAIN_PROFILE, else embedded
    job: JobOptions = field(default_factory=JobOptions)
    job_name: str | None = None
    run_dir: str | None = None  # None: results/<experiment>/<run-id>
    venv: str | None = None  # what the job activates, unless env_setup or the profile's
    env_setup: tuple[str, ...] = ()  # replaces the profile's env_setup lines


@dataclass(frozen=True)
class Resolved:
    spec: JobSpec
    cfg: TrainConfig
    profile: Profile
    run_dir: Path


def new_run_dir(experiment: str) -> Path:
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return results_dir() / experiment / run_id


def resolve(req: Request, template: str = "train.sbatch", check_data_file: bool = True,
            run_dir: Path | None = None) -> Resolved:
    """Everything checked before sbatch: profile, config, data file, job geometry."""
    profile = load_profile(req.profile)
    cfg = load_config(req.config, list(req.overrides))
    if check_data_file:
        check_data(cfg)
    run_dir = run_dir or (Path(req.run_dir).resolve() if req.run_dir
                          else new_run_dir(cfg.experiment))
    spec = job_spec(req, profile, run_dir, template, job_name=f"hpctrain-{cfg.experiment}",
                    config=absolute_spec(req.config),
                    scratch=profile.scratch if not cfg.synthetic else None,
                    data=str(Path(cfg.data).resolve()) if cfg.data else "")
    return Resolved(spec, cfg, profile, run_dir)


def job_spec(req: Request, profile: Profile, run_dir: Path, template: str, job_name: str,
             **script) -> JobSpec:
    """The checked JobSpec of a job on `profile`'s cluster (its geometry, environment and
    sbatch options; `script`: what the template needs besides, or instead of the request's
    config overrides as `extra_args`), refused in one line if the cluster cannot run it. A
    job that trains nothing (a benchmark's) has no config."""
    if req.env_setup:
        env_setup = tuple(req.env_setup)
    elif profile.env_setup:
        env_setup = tuple(profile.env_setup)
    else:
        venv = Path(req.venv or sys.prefix)
        env_setup = (f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",)
    values = {"job_name": req.job_name or job_name, "run_dir": str(run_dir),
              "workdir": str(Path.cwd()), "gres_name": profile.gres_name,
              "env_setup": env_setup, "extra_sbatch": tuple(profile.extra_sbatch),
              "extra_args": tuple(req.overrides), "allow_run_as_root": os.geteuid() == 0,
              "template": template, **req.job.settings(profile)}
    spec = make_spec(**{**values, **script})
    check_fits(spec, profile)
    return spec


def check_fits(spec: JobSpec, profile: Profile) -> None:
    """Refuse what the profile's cluster cannot run, in one line."""
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


def absolute_spec(spec: str) -> str:
    path, variant = split_spec(spec)
    return str(path.resolve()) + (f":{variant}" if variant else "")
