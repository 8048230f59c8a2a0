"""A site installs hpctrain with `pip install .` (not editable) into a fresh virtualenv,
outside the checkout: the job templates and cluster profiles come with the package, and a
training job renders and passes `sbatch --test-only` on the real embedded cluster. The
submission path needs no TensorFlow: the fresh venv does not have it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    # a copy of the source tree, as a site would unpack it (pip builds in the tree it is given)
    src = site / "hpctrain-src"
    local = {".venv", ".git", ".cluster", "results", "data", "build"}  # top level only

    def ignore(directory: str, names: list[str]) -> set[str]:
        junk = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", "_cache"))}
        return junk | (local & set(names) if Path(directory) == REPO else set())

    shutil.copytree(REPO, src, symlinks=True, ignore=ignore)
    venv = site / "venv"
    # without a pip of its own (installing one costs 3 s of CPU): this pip installs into it
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(venv)], check=True, timeout=120)
    # the pinned versions (as constraints: TensorFlow is not installed), from pip's cache
    # (--no-compile: byte-compiling pandas and matplotlib was half of this install's time)
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                          "install", "-q", "--no-compile", "--disable-pip-version-check", "-c",
                          str(src / "env" / "requirements.txt"), str(src)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return venv


@pytest.mark.slow(reason="pip installs the package and its dependencies into a fresh venv")
def test_non_editable_install_renders_a_job_slurm_accepts(fresh_venv, slurm_cluster,
                                                          fmnist_h5, tmp_path):
    python = str(fresh_venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import hpctrain, importlib.util; "
                            "print(hpctrain.__file__); "
                            "print(importlib.util.find_spec('tensorflow'))"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    module, tf_spec = where.split()
    assert module.startswith(str(fresh_venv)) and not module.startswith(str(REPO / "src"))
    assert tf_spec == "None"  # the submission path must not need TensorFlow
    shutil.copy(REPO / "jobs" / "configs" / "fmnist_cnn.yaml", tmp_path / "exp.yaml")
    env = {**os.environ, "SLURM_CONF": str(slurm_cluster.slurm_conf),
           "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    res = subprocess.run([str(fresh_venv / "bin" / "hpctrain"), "submit", "--config",
                          "exp.yaml:short", "--nodes", "2", "--dry-run", f"data={fmnist_h5}"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    script = res.stdout
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --nodes=2" in script
    assert "srun --mpi=pmix" in script and "set -euo pipefail" in script
    assert f"source {fresh_venv}/bin/activate" in script
    assert "sbatch --test-only: sbatch: Job" in res.stderr and "to start at" in res.stderr
    assert not (tmp_path / "results").exists()  # a dry run queues and creates nothing

    # a site's own profile, found by name in the user's config directory
    profiles = tmp_path / "config" / "hpctrain" / "clusters"
    profiles.mkdir(parents=True)
    (profiles / "site.yaml").write_text("partition: debug\nnode_cpus: 2\nmax_nodes: 2\n"
                                        "scratch: $TMPDIR\n")
    res = subprocess.run([str(fresh_venv / "bin" / "hpctrain"), "submit", "--profile", "site",
                          "--config", "exp.yaml:short", "--nodes", "3", "--dry-run",
                          f"data={fmnist_h5}"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "profile site has 2 nodes" in res.stderr, res.stderr
