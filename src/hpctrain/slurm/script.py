"""Render sbatch scripts from the Jinja2 templates in jobs/ (a pure function of a JobSpec).

Values reach the script through two filters: `sh` quotes for the shell (shlex.quote), `sb`
quotes for sbatch's own parser of #SBATCH lines (double quotes; backslash escapes `"`, `\\`
and `#`, which would otherwise start a comment). Newlines are refused outright: they are the
one way to inject a line. Golden files in tests/golden/ pin the output.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jinja2
from pydantic import ConfigDict, model_validator

from hpctrain.resources import template_dirs
from hpctrain.slurm.job_options import JobSettings
from hpctrain.validation import InputError, parse

# A value that reaches the job script inside double quotes, so that $TMPDIR expands (scratch):
# a path with $NAME or ${NAME}, nothing that could run a command ($(...), `...`, \, ").
_VARIABLE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9 _./+,=@:%~-]*$")
SAFE_PATH_RULE = ("a path, optionally with $NAME or ${NAME} variables; letters, digits, spaces "
                  "and _ . / + , = @ : % ~ - only (it is expanded inside double quotes)")


def is_safe_path(value: str) -> bool:
    return bool(value) and bool(_PATH_CHARS.match(_VARIABLE.sub("", value)))


class JobSpecError(InputError):
    """An impossible job request; the message is one line."""


class JobSpec(JobSettings):
    """Everything a job script is rendered from: the job options (job_options.py) and what
    the script needs besides; checked when built (`make_spec`)."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    config: str = ""  # path (or path:variant) handed to `hpctrain train --config`
    run_dir: str
    workdir: str
    gres_name: str = "gpu"
    scratch: str | None = None  # node-local directory to copy `data` to; $VARS expand
    data: str = ""  # the config's data file (for `scratch`; stage.sbatch writes it)
    env_setup: tuple[str, ...] = ()  # shell lines: `module load ...`, `source venv/bin/activate`
    extra_sbatch: tuple[str, ...] = ()  # more sbatch options, e.g. "--mem=0"
    extra_args: tuple[str, ...] = ()  # config overrides, key=value
    array: str | None = None  # sweep.sbatch: --array range, e.g. "0-19%8"
    array_args: tuple[tuple[str, ...], ...] = ()  # sweep.sbatch: overrides of each task
    stage_dataset: str = ""  # stage.sbatch
    stage_source: str = ""  # stage.sbatch
    stage_args: tuple[str, ...] = ()  # stage.sbatch, imagefolder: --size S --shards K ...
    allow_run_as_root: bool = False
    template: str = "train.sbatch"

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if not self.job_name.strip():
            raise ValueError("job name is empty")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", self.gres_name):
            raise ValueError(f"gres name {self.gres_name!r}: a name, or name:type (gpu, "
                             "gpu:a100), of letters, digits, _ . -")
        strings = [self.job_name, self.config, self.run_dir, self.workdir, self.partition or "",
                   self.account or "", self.qos or "", self.constraint or "",
                   self.scratch or "", self.data, self.stage_source, self.array or "",
                   *self.env_setup, *self.extra_sbatch, *self.extra_args, *self.stage_args,
                   *(a for args in self.array_args for a in args)]
        for value in strings:
            if "\n" in value or "\r" in value or "\0" in value:
                raise ValueError(f"newline or NUL in job value {value!r}")
        if self.scratch and not is_safe_path(self.scratch):
            raise ValueError(f"scratch {self.scratch!r}: {SAFE_PATH_RULE}; without "
                             "quotes, `, \\ or $( )")
        for option in self.extra_sbatch:
            if not option.startswith("--"):
                raise ValueError(f"extra sbatch option {option!r} must start with --")
        return self


    @property
    def data_name(self) -> str:
        """The data file's or shard directory's name (its node-local copy keeps it)."""
        return Path(self.data).name


def make_spec(**values) -> JobSpec:
    """A checked JobSpec, or JobSpecError with one line."""
    return parse(JobSpec, values, "", JobSpecError)


def with_changes(spec: JobSpec, **changes) -> JobSpec:
    """A copy of `spec` with `changes`, checked again."""
    return make_spec(**{**spec.model_dump(), **changes})


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


def _environment(dirs: list[Path]) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["sb"] = sbatch_quote
    env.filters["sb_option"] = sbatch_option
    env.filters["slurm_path"] = slurm_path
    return env


def render_sbatch(job: JobSpec, template_dir: Path | None = None) -> str:
    """The job script for `job`: a pure function of its arguments and the template files
    (`template_dir`, else $HPCTRAIN_JOBS_DIR, else the templates shipped in the package)."""
    dirs = [template_dir] if template_dir is not None else template_dirs()
    text = _environment(dirs).get_template(job.template).render(job=job)
    return text if text.endswith("\n") else text + "\n"
