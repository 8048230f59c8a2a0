"""The job options, declared once: what a job asks Slurm for and how it starts its ranks.

`JobSettings` holds each option with its default, its check and its one line of help; the
rest is derived from it:
- a cluster profile (profiles.Profile) is JobSettings plus what the cluster offers: its values
  are the defaults of the jobs sent there;
- a job script's spec (script.JobSpec) is JobSettings plus what the script needs;
- `JobOptions`: the options a user gave explicitly; the others come from the profile;
- `add_flags`: the flags of every command that sends jobs (submit, sweep, study,
  interactive), with the same names and help everywhere.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from hpctrain.validation import Checked

LAUNCHERS = ("srun", "mpirun", "horovodrun")
_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class JobSettings(Checked):
    """Every job option with its default (a profile may change the default)."""

    model_config = ConfigDict(frozen=True)

    nodes: int = Field(1, description="nodes")
    ntasks_per_node: int = Field(1, description="ranks per node (one per GPU)")
    cpus_per_task: int = Field(1, description="CPUs per rank = its intra-op threads")
    gpus_per_node: int = Field(0, description="GPUs per node (--gres)")
    time: str = Field("00:30:00", description="Slurm time limit, e.g. 00:30:00")
    partition: str | None = Field(None, description="Slurm partition")
    account: str | None = Field(None, description="account to charge")
    qos: str | None = Field(None, description="quality of service")
    constraint: str | None = Field(None, description="node features, e.g. a100")
    launcher: str = Field("srun", description="how the job starts its ranks",
                          json_schema_extra={"choices": list(LAUNCHERS)})
    signal_seconds: int = Field(120, description="USR1 this many s before the time limit: "
                                "checkpoint and requeue (0: off)")
    max_restarts: int = Field(3, description="requeues after a stop request before the job "
                              "gives up")

    @model_validator(mode="after")
    def _check_job(self) -> JobSettings:
        for name in ("nodes", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_node", "signal_seconds", "max_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if not _TIME.match(self.time):
            raise ValueError(f"--time {self.time!r} is not a Slurm time "
                             "(minutes, HH:MM:SS or D-HH:MM:SS)")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher {self.launcher!r} unknown; "
                             f"choose from {', '.join(LAUNCHERS)}")
        return self


JOB_KEYS = tuple(JobSettings.model_fields)


class JobOptions:
    """The job options given explicitly (flags, a study's points); None: not given."""

    __slots__ = ("given",)
    given: dict[str, Any]

    def __init__(self, **given: Any):
        unknown = set(given) - set(JOB_KEYS)
        if unknown:
            raise TypeError(f"unknown job option(s): {', '.join(sorted(unknown))}")
        object.__setattr__(self, "given", {k: v for k, v in given.items() if v is not None})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("JobOptions is immutable: use replace()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobOptions) and self.given == other.given

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.given.items())))

    def __repr__(self) -> str:
        return f"JobOptions({', '.join(f'{k}={v!r}' for k, v in self.given.items())})"

    def get(self, name: str) -> Any:
        return self.given.get(name)

    def replace(self, **changes: Any) -> JobOptions:
        return JobOptions(**{**self.given, **changes})

    @classmethod
    def taken_from(cls, source: object, exclude: Iterable[str] = ()) -> JobOptions:
        """The options of the same names on `source` (parsed command-line flags)."""
        return cls(**{k: getattr(source, k) for k in JOB_KEYS if k not in exclude})

    def settings(self, defaults: JobSettings) -> dict[str, Any]:
        """The defaults' values (a profile's), overridden by the options given."""
        return {k: self.given.get(k, getattr(defaults, k)) for k in JOB_KEYS}


def add_flags(parser: argparse.ArgumentParser, exclude: Iterable[str] = ()) -> None:
    """One flag per job option (--nodes, --ntasks-per-node, ...); unset: the profile's."""
    group = parser.add_argument_group("job options (default: the cluster profile's value; "
                                      "[the built-in one])")
    for name, field in JobSettings.model_fields.items():
        if name in exclude:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        choices = extra.get("choices")
        kind = int if isinstance(field.default, int) else str
        shown = f" [{field.default}]" if field.default is not None else ""
        group.add_argument(flag(name), type=kind, metavar="N" if kind is int else None,
                           choices=choices if isinstance(choices, list) else None,
                           help=f"{field.description}{shown}")
