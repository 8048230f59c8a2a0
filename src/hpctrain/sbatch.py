"""Render sbatch scripts from the Jinja2 templates in jobs/ (a pure function of a JobSpec).

Values reach the script through two filters: `sh` quotes for the shell (shlex.quote), `sb`
quotes for sbatch's own parser of #SBATCH lines (double quotes; backslash escapes `"`, `\\`
and `#`, which would otherwise start a comment). Newlines are refused outright: they are the
one way to inject a line. Golden files in tests/golden/ pin the output.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import jinja2

from hpctrain.paths import JOBS_DIR

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")


class JobSpecError(ValueError):
    """An impossible job request; the message is one line."""


@dataclass(frozen=True)
class JobSpec:
    job_name: str
    config: str  # path (or path:variant) handed to `hpctrain train --config`
    run_dir: str
    workdir: str
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    time: str = "00:30:00"
    partition: str | None = None
    account: str | None = None
    env_setup: tuple[str, ...] = ()  # shell lines: `module load ...`, `source venv/bin/activate`
    extra_args: tuple[str, ...] = ()  # config overrides, key=value
    allow_run_as_root: bool = False
    template: str = field(default="train.sbatch")

    def validate(self) -> JobSpec:
        for name in ("nodes", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise JobSpecError(f"--{name.replace('_', '-')} must be >= 1, "
                                   f"got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise JobSpecError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if not _TIME.match(self.time):
            raise JobSpecError(f"--time {self.time!r} is not a Slurm time "
                               "(minutes, HH:MM:SS or D-HH:MM:SS)")
        if not self.job_name.strip():
            raise JobSpecError("job name is empty")
        strings = [self.job_name, self.config, self.run_dir, self.workdir, self.partition or "",
                   self.account or "", *self.env_setup, *self.extra_args]
        for value in strings:
            if "\n" in value or "\r" in value or "\0" in value:
                raise JobSpecError(f"newline or NUL in job value {value!r}")
        return self


def sbatch_quote(value: str) -> str:
    """Quote a value for an #SBATCH line as sbatch's option parser reads it."""
    return '"' + re.sub(r'([\\"#])', r"\\\1", str(value)) + '"'


def slurm_path(value: str) -> str:
    """Escape `%` so Slurm's filename patterns (%j, %N, ...) leave the path alone."""
    return str(value).replace("%", "%%")


def _environment(template_dir) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["sb"] = sbatch_quote
    env.filters["slurm_path"] = slurm_path
    return env


def render_sbatch(job: JobSpec, template_dir=JOBS_DIR) -> str:
    """The job script for `job`: a pure function of its arguments and the template file."""
    job.validate()
    text = _environment(template_dir).get_template(job.template).render(job=job)
    return text if text.endswith("\n") else text + "\n"
