"""Shared fixtures: real Fashion-MNIST staged once, the embedded Slurm cluster brought up once,
and a directory whose name holds spaces, quotes and `;` (as submitit's weird_tmp_path).

Lanes (markers, checked with --strict-markers): `slurm` (the embedded cluster), `mpi` (real
ranks, or an `hpctrain train` process), `slow` (over its share of the budget, with the
reason). `make test-fast` runs the rest. Every test's time is recorded; when the whole suite
runs, test_budget.py fails for any test that took more than SHARE of it without `slow`.
"""

from __future__ import annotations

import json
import os
import re
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


def machine_cpu_s() -> float:
    """CPU seconds used so far by every process on the machine (/proc/stat): what a test
    costs in CPU, the Slurm daemons and the ranks they start included. On a machine k times
    slower (or under a CPU quota of q cores) a test takes about this / q of wall time."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


CPU_S: dict[str, float] = {}  # nodeid -> machine-wide CPU seconds, setup to teardown


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = machine_cpu_s()
    yield
    CPU_S[item.nodeid] = machine_cpu_s() - start


def pytest_terminal_summary(terminalreporter):
    """The tests that used the most CPU (with --durations, which says the wall time)."""
    if not CPU_S or not terminalreporter.config.getoption("durations"):
        return
    top = sorted(CPU_S.items(), key=lambda kv: -kv[1])
    terminalreporter.write_sep("=", "most CPU, all processes on the machine (s)")
    for nodeid, seconds in top[:terminalreporter.config.getoption("durations")]:
        terminalreporter.write_line(f"{seconds:.1f} cpu-s {nodeid}")
    terminalreporter.write_line(f"{sum(CPU_S.values()):.0f} cpu-s in {len(CPU_S)} tests")


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


def rank_launcher(np: int = 2, launcher: str = "mpirun") -> tuple[list[str], dict]:
    """argv prefix and environment that start `np` ranks on this machine: `mpirun -np 2`, or
    `horovodrun -np 2 -H localhost:2` (whose driver imports TensorFlow itself, ~3.7 CPU-s a
    launch: used where horovodrun is what a test checks)."""
    require_lane("mpi", launcher)
    env = {**os.environ, **MPI_ENV, "TF_CPP_MIN_LOG_LEVEL": "1"}
    if launcher == "horovodrun":
        return [str(VENV_BIN / "horovodrun"), "-np", str(np), "-H", f"localhost:{np}"], env
    # as horovodrun runs it: no binding (hpctrain sizes its threads), ranks by slot
    return ["mpirun", "-np", str(np), "--bind-to", "none", "--map-by", "slot"], env


def ranks_command(config: Path, run_dir: Path, *overrides: str, resume: bool = False,
                  np: int = 2, launcher: str = "mpirun") -> tuple[list[str], dict]:
    """argv and environment of `mpirun -np 2 hpctrain train ...` (or horovodrun)."""
    prefix, env = rank_launcher(np, launcher)
    return [*prefix, str(VENV_BIN / "hpctrain"), "train", "--config", str(config),
            "--run-dir", str(run_dir), *(["--resume"] if resume else []), *overrides], env


def on_ranks(config: Path, run_dir: Path, *overrides: str, resume: bool = False,
             timeout: float = 600, np: int = 2,
             launcher: str = "mpirun") -> subprocess.CompletedProcess:
    """Run it to the end, as on an interactive node."""
    argv, env = ranks_command(config, run_dir, *overrides, resume=resume, np=np,
                              launcher=launcher)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def read_report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def cut_checkpoint(path: Path, keep: float = 1 / 3) -> None:
    """What a node dying during a flush, or a quota hit, leaves: the data file cut short."""
    (data,) = path.glob("ckpt.data-*")
    data.write_bytes(data.read_bytes()[:int(data.stat().st_size * keep)])


@pytest.fixture
def mpirun_available() -> None:
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun missing: run env/install-system.sh")


@pytest.fixture(scope="session")
def staged_256(tmp_path_factory) -> Path:
    """A tiny tree staged at 256x256, as ImageNet is."""
    root = tmp_path_factory.mktemp("t256")
    tree = make_tree(root / "tree", 20, 10, unreadable=0)
    hpctrain("stage", "imagefolder", "--source", str(tree), "--out", str(root / "staged"),
             "--size", "256", "--shards", "2", check=True)
    return root / "staged"


# The 2-rank runs that need a launch but no job system, all in one (tests/one_launch.py,
# under horovodrun as on an interactive node): every model of the zoo but ResNet-50 on a few
# steps of Fashion-MNIST (what each reaches is measured once, on the whole data:
# results/accuracy; ResNet-50 steps at 224x224 in a process of its own:
# test_imagefolder_jobs.py), bfloat16 with XLA, the workshop CNN trained (CNN2), the
# uninterrupted run of the long Slurm jobs' config (LONG), and three runs with seeds 1, 1 and
# 2, the first before every other run and the other two after them (nothing a run leaves in
# the process may change the next one's weights). float16 is not among them: its processes
# need oneDNN off before TensorFlow loads (as `hpctrain train` does), which would change the
# others (it runs in the end-to-end Slurm job). Nor is Horovod's timeline: its writer thread
# spins on rank 0 from hvd.init to the end of the process, which would slow every run here
# (the image-tree chain's short job writes it).
ZOO = ["train_limit=512", "test_limit=256", "batch_size=32", "pictures=false",
       "checkpoint=false"]  # checkpoints: the resume tests
# the zoo's residual net also takes the ImageNet recipe's parts (random-resized crops of 24
# from 28, weight decay, zero-initialised residual gammas, label smoothing), the BatchNorm CNN
# LARS and the 64-filter CNN LAMB (the layer-wise optimizers trace a graph per variable: on
# the small CNNs, not the residual net's 65 variables): every part through Horovod at no
# extra launch cost
RECIPE = {
    "resnet20": ["crop=24", "augment=true", "random_resized_crop=true", "weight_decay=0.0001",
                 "zero_init_residual=true", "label_smoothing=0.1", "optimizer=sgd",
                 "learning_rate=0.1", "momentum=0.9"],
    "cnn_bn": ["optimizer=lars", "learning_rate=0.5", "momentum=0.9", "weight_decay=0.0001"],
    "cnn64": ["optimizer=lamb", "learning_rate=0.002", "weight_decay=0.01"],
}
ZOO_OWN = {"resnet20": ["batch_size=8", "train_limit=64", "test_limit=32", *RECIPE["resnet20"]],
           **{m: RECIPE[m] for m in ("cnn_bn", "cnn64")}}
RESNET50_224 = ["epochs=1", "batch_size=2", "warmup_epochs=0", "lr_schedule=constant",
                "lr_decay_epochs=[]", "checkpoint=false", "pictures=false", "train_limit=8",
                "test_limit=2"]  # two steps (a rate needs one past the first), one test batch
# (test_imagefolder_jobs.py: the ImageNet config on images staged at 256, one rank)
MIXED = {
    "bfloat16-xla-adam-step": [  # bfloat16 is slow on CPUs: half the images
        "precision=mixed_bfloat16", "xla=true", "optimizer=adam", "lr_schedule=step",
        "lr_decay_epochs=[1]", "epochs=2", "train_limit=1000"],
}
# float16 with loss scaling, on TensorFlow's own CPU kernels (convolutions are slow there,
# dense layers are not): the end-to-end Slurm job's recipe (test_e2e_slurm.py)
FLOAT16 = ["precision=mixed_float16", "model=mlp5", "optimizer=sgd", "lr_schedule=cosine",
           "epochs=2"]
SEEDS = {"seed-1a": 1, "seed-1b": 1, "seed-2": 2}
# The workshop CNN trained on 2 ranks, shared by the tests that read a trained run
# (horovodrun's report, exact resume after a kill, pictures, predict): cnn_two_ranks.
CNN2 = dict(model="cnn", epochs=3, lr_schedule="cosine", optimizer="sgd", learning_rate=0.02,
            pictures=True)
# The long Slurm jobs' config (test_slurm_jobs.py: one preempted and then stopped by its time
# limit, one with a rank killed): its uninterrupted run is here, and the job resumed twice
# must end with its weights.
# The smallest model with dropout (its masks must resume exactly too); one thread a rank
# wherever it runs (an interactive launch and a Slurm job size their threads differently).
LONG = dict(model="mlp5_dropout", batch_size=64, epochs=5, train_limit=4000, test_limit=1000,
            threads=1)


class Launched:
    """The runs of one launch: each one's run directory, config, exit code and the launch's
    output."""

    def __init__(self, plan: list[dict], res: subprocess.CompletedProcess):
        self.dirs = {run["name"]: Path(run["run_dir"]) for run in plan}
        self.configs = {run["name"]: Path(run["config"]) for run in plan}
        self.output = res.stdout[-4000:] + res.stderr[-4000:]
        self.codes = {m[1]: int(m[2]) for m in re.finditer(r"one_launch: (\S+) exit (-?\d+)",
                                                           res.stdout)}
        # what autograph wrote for each rank, listed before the rank ended
        self.autograph = {p.stem: json.loads(p.read_text()) for p in
                          sorted(Path(plan[0]["run_dir"]).parent.glob("autograph-rank*.json"))}

    def report(self, name: str) -> dict:
        """report.json of run `name`, which must have ended with exit code 0."""
        assert self.codes.get(name) == 0, f"{name}: exit {self.codes.get(name)}\n{self.output}"
        return read_report(self.dirs[name])


@pytest.fixture(scope="session")
def one_launch(fmnist_h5, tmp_path_factory) -> Launched:
    from hpctrain.train.models import MODELS

    root = tmp_path_factory.mktemp("one_launch")
    fmnist = write_config(root / "fmnist.yaml", fmnist_h5, learning_rate=0.01)
    seeds = [{"name": name, "config": str(fmnist), "overrides": [
                 "model=mlp5_dropout", "epochs=2", *ZOO, f"seed={seed}"]}
             for name, seed in SEEDS.items()]
    plan = seeds[:1] + [{"name": model, "config": str(fmnist), "overrides": [
                            f"model={model}", *ZOO, *ZOO_OWN.get(model, [])]}
                        for model in MODELS if model != "resnet50"]
    plan += [{"name": name, "config": str(fmnist), "overrides": [*TINY_2RANK, *overrides]}
             for name, overrides in MIXED.items()]
    plan.append({"name": "cnn2", "config": str(write_config(root / "cnn2.yaml", fmnist_h5,
                                                             **CNN2)),
                 "overrides": TINY_2RANK})
    plan.append({"name": "long-reference", "config": str(
        write_config(root / "long.yaml", fmnist_h5, **LONG)), "overrides": []})
    plan += seeds[1:]
    for run in plan:
        run["run_dir"] = str(root / run["name"])
    (root / "plan.json").write_text(json.dumps(plan, indent=1))
    launcher, env = rank_launcher(np=2, launcher="horovodrun")
    res = subprocess.run([*launcher, str(VENV_BIN / "python"), str(REPO / "tests" /
                                                                   "one_launch.py"),
                          str(root / "plan.json")],
                         env=env, capture_output=True, text=True, timeout=3000)
    return Launched(plan, res)


@pytest.fixture(scope="session")
def cnn_two_ranks(one_launch) -> tuple[Path, Path]:
    """(config, run dir) of the finished 2-rank run of the workshop CNN (CNN2 and TINY_2RANK,
    in the launch above, under horovodrun), shared by the tests that read a trained run."""
    one_launch.report("cnn2")  # it completed
    return one_launch.configs["cnn2"], one_launch.dirs["cnn2"]


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (its own event reader, restart
    markers applied) from <run_dir>/tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def check_tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every epoch of metrics.jsonl once in the event files, with its values (float32)."""
    from hpctrain.train.event_log import epoch_scalars

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    points = tensorboard_scalars(run_dir)
    want: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for tag, value in epoch_scalars(row).items():
            want.setdefault(tag, []).append((row["epoch"], value))
    for tag, series in want.items():
        got = points.get(tag, [])
        assert [s for s, _ in got] == [s for s, _ in series], (tag, got, series)
        assert [v for _, v in got] == pytest.approx([v for _, v in series], rel=1e-6), tag
    return points
