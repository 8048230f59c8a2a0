"""`hpctrain interactive`: the salloc / srun --pty lines for an interactive session on the
profile's cluster, printed (default) or run (`--run [-- command]`).

    hpctrain interactive --nodes 2                 # print what to type
    hpctrain interactive --nodes 2 --run           # salloc, then a shell inside the allocation
    hpctrain interactive --nodes 2 --run -- srun --mpi=pmix hpctrain train --config C
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable

from hpctrain.slurm.client import slurm_env
from hpctrain.slurm.profiles import load_profile
from hpctrain.slurm.request import JobOptions


def salloc_argv(job: dict, gres_name: str = "gpu") -> list[str]:
    """salloc options for the job settings (nodes, tasks, CPUs, GPUs, time, placement)."""
    argv = ["salloc", f"--nodes={job['nodes']}", f"--ntasks-per-node={job['ntasks_per_node']}",
            f"--cpus-per-task={job['cpus_per_task']}"]
    if job["gpus_per_node"]:
        argv.append(f"--gres={gres_name}:{job['gpus_per_node']}")
    argv.append(f"--time={job['time']}")
    argv += [f"--{k}={job[k]}" for k in ("partition", "account", "qos", "constraint") if job[k]]
    return argv


def lines(profile_name: str | None, options: JobOptions,
          config: str | None = None) -> tuple[list[str], str]:
    """(salloc argv, the text to print: how to train inside the allocation)."""
    profile = load_profile(profile_name)
    job = options.settings(profile)
    salloc = salloc_argv(job, profile.gres_name)
    config = shlex.quote(config) if config else "jobs/configs/fmnist_cnn.yaml:short"
    ranks = job["nodes"] * job["ntasks_per_node"]
    text = "\n".join([
        f"# interactive session on profile {profile.name}: {ranks} rank(s) on "
        f"{job['nodes']} node(s)",
        shlex.join(salloc),
        "# inside the allocation, all nodes:",
        f"srun --mpi=pmix hpctrain train --config {config}",
        "# or a shell on the first node, then ranks there with horovodrun:",
        "srun --nodes=1 --ntasks=1 --pty bash",
        f"horovodrun -np {job['ntasks_per_node']} -H localhost:{job['ntasks_per_node']} "
        f"hpctrain train --config {config}",
        "",
    ])
    return salloc, text


def run_allocation(salloc: list[str], command: list[str] | None = None,
                   log: Callable[[str], None] = lambda line: None) -> int:
    """salloc's allocation, running `command` (default: a shell on the first node); its
    exit code. The line it runs goes to `log` first."""
    command = [c for c in command or [] if c != "--"] or [
        "srun", "--pty", os.environ.get("SHELL", "/bin/bash")]
    log("+ " + shlex.join([*salloc, *command]))
    env = {**slurm_env(), "TF_USE_LEGACY_KERAS": "1"}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.call([*salloc, *command], env=env)
