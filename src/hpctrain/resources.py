"""Where hpctrain finds its files, in a checkout or in any installed copy of the package.

- Job templates (`train.sbatch`, ...) and cluster profiles ship inside the package
  (`hpctrain/slurm/job_templates/`, `hpctrain/slurm/cluster_profiles/`); in a checkout,
  `jobs/*.sbatch` and `env/clusters/` are links to them, so users read and edit them there.
  `$HPCTRAIN_JOBS_DIR` points at a directory of edited templates that take precedence.
- Cluster profiles are looked up by name in `$HPCTRAIN_PROFILES_DIR`, then
  `${XDG_CONFIG_HOME:-~/.config}/hpctrain/clusters/`, then the shipped ones; or given by path.
- Run directories go under `$HPCTRAIN_RESULTS`, else `./results` of the working directory.
- The embedded cluster keeps its state in `$HPCTRAIN_CLUSTER_DIR`, else `.cluster/` of the
  checkout (editable install), else `${XDG_STATE_HOME:-~/.local/state}/hpctrain/cluster`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
JOB_TEMPLATES = PACKAGE_DIR / "slurm" / "job_templates"
SHIPPED_PROFILES = PACKAGE_DIR / "slurm" / "cluster_profiles"


def checkout_root() -> Path | None:
    """The repository checkout this package runs from (editable install), or None."""
    root = PACKAGE_DIR.parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "jobs").is_dir() else None


def template_dirs() -> list[Path]:
    """Where job templates are looked up, first match wins."""
    user = os.environ.get("HPCTRAIN_JOBS_DIR")
    return [*([Path(user)] if user else []), JOB_TEMPLATES]


def profile_dirs() -> list[Path]:
    """Where cluster profiles are looked up by name, first match wins."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs = [config_home / "hpctrain" / "clusters", SHIPPED_PROFILES]
    user = os.environ.get("HPCTRAIN_PROFILES_DIR")
    return [Path(user), *dirs] if user else dirs


def results_dir() -> Path:
    return Path(os.environ.get("HPCTRAIN_RESULTS") or Path.cwd() / "results").resolve()


def cluster_dir() -> Path:
    if os.environ.get("HPCTRAIN_CLUSTER_DIR"):
        return Path(os.environ["HPCTRAIN_CLUSTER_DIR"])
    root = checkout_root()
    if root is not None:
        return root / ".cluster"
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "hpctrain" / "cluster"
