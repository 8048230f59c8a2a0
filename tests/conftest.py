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

from hpctrain.cluster import EmbeddedCluster  # noqa: E402
from hpctrain.staging import stage  # noqa: E402

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


def write_config(path: Path, data: Path, **extra) -> Path:
    import yaml

    cfg = {"experiment": "test", "data": str(data), "model": "cnn", "batch_size": 64,
           "epochs": 1, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


def horovodrun(config: Path, run_dir: Path, *overrides: str, resume: bool = False,
               timeout: float = 600, np: int = 2) -> subprocess.CompletedProcess:
    """`horovodrun -np 2 -H localhost:2 hpctrain train ...`, as on an interactive node."""
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "TF_CPP_MIN_LOG_LEVEL": "1"}
    return subprocess.run(
        [str(VENV_BIN / "horovodrun"), "-np", str(np), "-H", f"localhost:{np}",
         *horovod_train_args(config, run_dir, *overrides, resume=resume)],
        env=env, capture_output=True, text=True, timeout=timeout)


def horovod_train_args(config: Path, run_dir: Path, *overrides: str,
                       resume: bool = False) -> list[str]:
    return [str(VENV_BIN / "hpctrain"), "train", "--config", str(config), "--run-dir",
            str(run_dir), *(["--resume"] if resume else []), *overrides]


def read_report(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "report.json").read_text())


@pytest.fixture
def mpi_env() -> dict:
    env = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "TF_USE_LEGACY_KERAS": "1"}
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun missing: run env/install-system.sh")
    return env
