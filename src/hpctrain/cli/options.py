"""Flags more than one command takes: the experiment config, the job options (declared in
slurm/job_options.py), and what submit and sweep share."""

from __future__ import annotations


def config_options(p) -> None:
    p.add_argument("--config", required=True, help="experiment YAML, optionally FILE:variant")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def job_options(p, exclude: tuple[str, ...] = ()) -> None:
    """Job settings: the cluster profile's values unless given here."""
    from hpctrain.slurm.job_options import add_flags

    p.add_argument("--profile", help="cluster profile: a name (looked up in "
                   "$HPCTRAIN_PROFILES_DIR, ~/.config/hpctrain/clusters/, then the shipped "
                   "env/clusters/) or a path; default $HPCTRAIN_PROFILE, else embedded")
    add_flags(p, exclude)


def submit_options(p) -> None:
    p.add_argument("--job-name")
    p.add_argument("--venv", help="virtualenv the job activates (default: this one), unless "
                   "the profile has env_setup")
    p.add_argument("--env-setup", action="append", metavar="LINE",
                   help="shell line replacing the profile's env_setup (repeatable), e.g. "
                        "'module load tensorflow/2.21'")
    p.add_argument("--dry-run", action="store_true",
                   help="print the script and run sbatch --test-only; queue nothing")
    p.add_argument("--wait", action="store_true", help="wait for the job, print its report")
    p.add_argument("--wait-timeout", type=float, default=3600.0)
