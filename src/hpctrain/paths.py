"""Where things live: the repository checkout that env/install.sh installed (editable)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
JOBS_DIR = REPO_ROOT / "jobs"
RESULTS_DIR = REPO_ROOT / "results"
