"""Shared fixtures: real Fashion-MNIST staged once, the embedded Slurm cluster brought up once,
and a directory whose name holds spaces, quotes and `;` (as submitit's weird_tmp_path).

Lanes (markers, checked with --strict-markers): `slurm` (the embedded cluster), `mpi` (real
ranks, or an `hpctrain train` process), `slow` (over its share of the budget, with the
reason). `make test-fast` runs the rest. Every test's time is recorded; when the whole suite
runs, test_budget.py fails for any test that took more than SHARE of it without `slow`.
"""

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
TEST_NODES = 8
SHORT = ["train_limit=4000", "test_limit=1000", "epochs=1"]  # ~20 s on 2 ranks here
TINY_2RANK = ["train_limit=2000", "test_limit=500", "batch_size=64"]

# `make test` must take <= 25 minutes on a slow machine of this kind (the demo job at ~600
# images/s); no single test may take more than this share of the suite unless marked
# `slow(reason=...)`. A share, not seconds: machines of this kind differ by more than 6x.
SHARE = 0.04
DURATIONS: dict[str, float] = {}  # nodeid -> setup + call + teardown seconds, this session
FAILED: list[str] = []
_current: list[pytest.Item] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) and \
                item.get_closest_marker("slurm") is None:
            raise pytest.UsageError(f"{item.nodeid} uses slurm_cluster: mark it slurm")
        slow = item.get_closest_marker("slow")
        if slow is not None and not slow.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: slow(reason=...) must say why")
    # the budget check reads every other test's time: last
    items.sort(key=lambda item: item.get_closest_marker("budget_check") is not None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _current[:] = [item]


def pytest_runtest_logreport(report):
    DURATIONS[report.nodeid] = DURATIONS.get(report.nodeid, 0.0) + report.duration
    if report.failed:
        FAILED.append(report.nodeid)


def require_lane(lane: str, what: str) -> None:
    """Fails the running test if it starts `what` without being marked `lane`."""
    if _current and _current[0].get_closest_marker(lane) is None:
        pytest.fail(f"{_current[0].nodeid} runs {what}: mark it {lane}", pytrace=False)


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
    """A real embedded Slurm cluster in its own directory and ports, torn down at the end.
    8 logical nodes rather than the demo's 4: independent jobs (the long ones that wait on
    Slurm's signals) run at once and overlap their waits."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = EmbeddedCluster(root=root, base_port=27817, nodes=TEST_NODES)
    try:
        cluster.up(timeout=90)
        yield cluster
    finally:
        cluster.down()


def hpctrain(*args: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """Run the installed `hpctrain` command as a user would."""
    if args[:1] == ("train",):
        require_lane("mpi", "an hpctrain train process")
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

    # pictures cost a rank ~2.4 s of CPU (40 % of a tiny run): drawn only where a test
    # looks at them (pictures=True)
    cfg = {"experiment": "test", "data": str(data), "model": "cnn", "batch_size": 64,
           "epochs": 1, "pictures": False, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


# Open MPI refuses root without these. TF_USE_LEGACY_KERAS is left out on purpose: hpctrain
# must set it itself before TensorFlow loads.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def horovodrun_launcher(np: int = 2) -> tuple[list[str], dict]:
    """argv prefix and environment of `horovodrun -np 2 -H localhost:2 ...`."""
    require_lane("mpi", "horovodrun")
    return ([str(VENV_BIN / "horovodrun"), "-np", str(np), "-H", f"localhost:{np}"],
            {**os.environ, **MPI_ENV, "TF_CPP_MIN_LOG_LEVEL": "1"})


def horovodrun_command(config: Path, run_dir: Path, *overrides: str, resume: bool = False,
                       np: int = 2) -> tuple[list[str], dict]:
    """argv and environment of `horovodrun -np 2 -H localhost:2 hpctrain train ...`."""
    launcher, env = horovodrun_launcher(np)
    return [*launcher, str(VENV_BIN / "hpctrain"), "train", "--config", str(config),
            "--run-dir", str(run_dir), *(["--resume"] if resume else []), *overrides], env


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


@pytest.fixture(scope="session")
def cnn_two_ranks(fmnist_h5, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run dir) of one finished 2-rank horovodrun of the workshop CNN, shared by the
    tests that read a trained run (horovodrun's report, exact resume, pictures, predict)."""
    root = tmp_path_factory.mktemp("cnn2")
    config = write_config(root / "exp.yaml", fmnist_h5, model="cnn", epochs=3,
                          lr_schedule="cosine", optimizer="sgd", learning_rate=0.02,
                          pictures=True)
    res = horovodrun(config, root / "run", *TINY_2RANK)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return config, root / "run"
