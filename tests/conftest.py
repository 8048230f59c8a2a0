"""Shared fixtures: real Fashion-MNIST staged once, the embedded Slurm cluster brought up once,
and a directory whose name holds spaces, quotes and `;` (as submitit's weird_tmp_path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # in-process TensorFlow tests: Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hpctrain.cluster.embedded import EmbeddedCluster  # noqa: E402
from hpctrain.data.stage_mnist import stage  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
SHORT = ["train_limit=4000", "test_limit=1000", "epochs=1"]  # ~20 s on 2 ranks here


@pytest.fixture
def weird_tmp_path(tmp_path: Path) -> Path:
    path = tmp_path / "we ird'dir \"q\";touch INJECTED; #x %j $HOME"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def fmnist_h5(tmp_path_factory) -> Path:
    if not FASHION_DIR.is_dir():
        pytest.fail(f"{FASHION_DIR} missing: run env/install-system.sh (dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("data") / "fashion-mnist.h5"
    stage("fashion-mnist", FASHION_DIR, out)
    return out


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real embedded Slurm cluster in its own directory and ports, torn down at the end."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = EmbeddedCluster(root=root, base_port=27817)
    try:
        cluster.up(timeout=90)
        yield cluster
    finally:
        cluster.down()


def hpctrain(*args: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed `hpctrain` command as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1", **(env or {})}
    res = subprocess.run([str(VENV_BIN / "hpctrain"), *args], env=full_env, cwd=cwd,
                         capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"hpctrain {' '.join(args)} exited {res.returncode}:\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def make_tree(out: Path, train: int, val: int, unreadable: int = 2) -> Path:
    """A small ImageNet-layout tree of real Fashion-MNIST images (scripts/make_imagefolder.py)."""
    subprocess.run([str(VENV_BIN / "python"), str(REPO / "scripts" / "make_imagefolder.py"),
                    "--out", str(out), "--train", str(train), "--val", str(val),
                    "--unreadable", str(unreadable), "--workers", "2"],
                   check=True, capture_output=True, timeout=300)
    return out


def write_config(path: Path, data: Path, **extra) -> Path:
    import yaml

    cfg = {"experiment": "test", "data": str(data), "model": "cnn", "batch_size": 64,
           "epochs": 1, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


# Open MPI refuses root without these. TF_USE_LEGACY_KERAS is left out on purpose: hpctrain
# must set it itself before TensorFlow loads.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def horovodrun_command(config: Path, run_dir: Path, *overrides: str, resume: bool = False,
                       np: int = 2) -> tuple[list[str], dict]:
    """argv and environment of `horovodrun -np 2 -H localhost:2 hpctrain train ...`."""
    argv = [str(VENV_BIN / "horovodrun"), "-np", str(np), "-H", f"localhost:{np}",
            str(VENV_BIN / "hpctrain"), "train", "--config", str(config), "--run-dir",
            str(run_dir), *(["--resume"] if resume else []), *overrides]
    return argv, {**os.environ, **MPI_ENV, "TF_CPP_MIN_LOG_LEVEL": "1"}


def horovodrun(config: Path, run_dir: Path, *overrides: str, resume: bool = False,
               timeout: float = 600, np: int = 2) -> subprocess.CompletedProcess:
    """Run it to the end, as on an interactive node."""
    argv, env = horovodrun_command(config, run_dir, *overrides, resume=resume, np=np)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def read_report(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture
def mpirun_available() -> None:
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun missing: run env/install-system.sh")
