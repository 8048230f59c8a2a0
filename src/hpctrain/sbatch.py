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

LAUNCHERS = ("srun", "mpirun", "horovodrun")
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
    qos: str | None = None
    constraint: str | None = None
    gres_name: str = "gpu"
    launcher: str = "srun"  # srun | mpirun | horovodrun
    signal_seconds: int = 120  # 0: no time-limit signal
    max_restarts: int = 3
    scratch: str | None = None  # node-local directory to copy `data` to; $VARS expand
    data: str = ""  # the config's data file (for `scratch`; stage.sbatch writes it)
    env_setup: tuple[str, ...] = ()  # shell lines: `module load ...`, `source venv/bin/activate`
    extra_sbatch: tuple[str, ...] = ()  # more sbatch options, e.g. "--mem=0"
    extra_args: tuple[str, ...] = ()  # config overrides, key=value
    array: str | None = None  # sweep.sbatch: --array range, e.g. "0-19%8"
    array_args: tuple[tuple[str, ...], ...] = ()  # sweep.sbatch: overrides of each task
    stage_dataset: str = ""  # stage.sbatch
    stage_source: str = ""  # stage.sbatch
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
        if self.launcher not in LAUNCHERS:
            raise JobSpecError(f"--launcher {self.launcher!r} unknown; "
                               f"choose from {', '.join(LAUNCHERS)}")
        if self.signal_seconds < 0 or self.max_restarts < 0:
            raise JobSpecError("signal_seconds and max_restarts must be >= 0")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.gres_name):
            raise JobSpecError(f"gres name {self.gres_name!r}: use letters, digits, _ . -")
        strings = [self.job_name, self.config, self.run_dir, self.workdir, self.partition or "",
                   self.account or "", self.qos or "", self.constraint or "",
                   self.scratch or "", self.data, self.stage_source, self.array or "",
                   *self.env_setup, *self.extra_sbatch, *self.extra_args,
                   *(a for args in self.array_args for a in args)]
        for value in strings:
            if "\n" in value or "\r" in value or "\0" in value:
                raise JobSpecError(f"newline or NUL in job value {value!r}")
        if self.scratch and re.search(r'["`\\]', self.scratch):
            raise JobSpecError(f"scratch {self.scratch!r}: a path, optionally with $VARIABLES "
                               "(it is expanded inside double quotes), without \" ` or \\")
        for option in self.extra_sbatch:
            if not option.startswith("--"):
                raise JobSpecError(f"extra sbatch option {option!r} must start with --")
        return self


def sbatch_quote(value: str) -> str:
    """Quote a value for an #SBATCH line as sbatch's option parser reads it."""
    return '"' + re.sub(r'([\\"#])', r"\\\1", str(value)) + '"'


def sbatch_option(option: str) -> str:
    """`--name=value` for an #SBATCH line, the value quoted as sbatch reads it."""
    name, sep, value = str(option).partition("=")
    return name + (sep + sbatch_quote(value) if sep else "")


def slurm_path(value: str) -> str:
    """Escape `%` so Slurm's filename patterns (%j, %N, ...) leave the path alone."""
    return str(value).replace("%", "%%")


def _environment(template_dir) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["sb"] = sbatch_quote
    env.filters["sb_option"] = sbatch_option
    env.filters["slurm_path"] = slurm_path
    return env


def render_sbatch(job: JobSpec, template_dir=JOBS_DIR) -> str:
    """The job script for `job`: a pure function of its arguments and the template file."""
    job.validate()
    text = _environment(template_dir).get_template(job.template).render(job=job)
    return text if text.endswith("\n") else text + "\n"
