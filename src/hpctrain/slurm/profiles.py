"""Cluster profiles: what a cluster offers and how jobs run on it, one YAML file per cluster.

    env/clusters/embedded.yaml      the embedded test cluster (`hpctrain cluster up`)
    env/clusters/example-gpu.yaml   a commented template for a typical GPU cluster

`hpctrain submit --profile NAME` (default $HPCTRAIN_PROFILE, else `embedded`) takes the job
defaults from the profile; command-line flags override them. The hardware facts (node_gpus,
node_cpus, max_nodes, max_time) are limits: a request beyond them is refused before sbatch.
Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from hpctrain.resources import profile_dirs
from hpctrain.slurm.job_options import JobSettings
from hpctrain.slurm.script import SAFE_PATH_RULE, is_safe_path
from hpctrain.validation import InputError, parse, read_mapping


class ProfileError(InputError):
    """A missing or bad cluster profile; the message is one line."""


class Profile(JobSettings):
    """What a cluster offers, and the defaults of its jobs: every job option
    (job_options.JobSettings: nodes, ntasks_per_node, ..., partition, launcher,
    signal_seconds, max_restarts), which command-line flags override."""

    model_config = ConfigDict(frozen=True)

    name: str = "embedded"
    description: str = ""
    # what one node has, and the partition's limits (None: not checked)
    node_gpus: int = 0
    node_cpus: int | None = None
    max_nodes: int | None = None
    max_time: str | None = None
    gres_name: str = "gpu"  # --gres=<gres_name>:<gpus per node>
    # shell lines run before training, e.g. `module load ...`; empty: activate this venv
    env_setup: list[str] = Field(default_factory=list)
    scratch: str | None = None  # node-local directory: the data is copied there first
    extra_sbatch: list[str] = Field(default_factory=list)  # e.g. "--mem=0", "--exclusive"

    @model_validator(mode="after")
    def _check(self) -> Profile:
        for line in self.extra_sbatch:
            if not line.startswith("--") or "\n" in line:
                raise ValueError(f"extra_sbatch entry {line!r} must be one sbatch option "
                                 "starting with --")
        if self.node_gpus < 0:
            raise ValueError("node_gpus must be >= 0")
        if self.scratch is not None and not is_safe_path(self.scratch):
            raise ValueError(f"scratch {self.scratch!r}: {SAFE_PATH_RULE}")
        return self


def profile_path(name: str) -> Path:
    """A path as given (NAME.yaml or containing /), else the first NAME.yaml on the search
    path (resources.profile_dirs); the last candidate if none exists."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    candidates = [d / f"{name}.yaml" for d in profile_dirs()]
    return next((c for c in candidates if c.is_file()), candidates[-1])


def default_name() -> str:
    return os.environ.get("HPCTRAIN_PROFILE") or "embedded"


def available() -> list[str]:
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.yaml")})


def load_profile(name: str | None = None) -> Profile:
    name = name or default_name()
    path = profile_path(name)
    if not path.is_file():
        raise ProfileError(f"no cluster profile {name!r} ({path} not found); "
                           f"available: {', '.join(available())}")
    data = read_mapping(path, ProfileError)
    data.pop("name", None)  # a profile is named after its file
    return parse(Profile, {**data, "name": path.stem}, f"profile {path}", ProfileError)


def slurm_minutes(value: str) -> float:
    """Minutes in a Slurm time string: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, rest = value.rpartition("-") if "-" in value else ("", "", value)
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
        return int(days) * 1440 + h * 60 + m + s / 60
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60
