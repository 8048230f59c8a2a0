"""`hpctrain doctor`: everything a job needs on a cluster, checked in one go, as a checklist
with the fix for each failure. On the login node: Slurm answers, the profile's partition and
its nodes can give what the profile asks for, the launcher works (srun offers PMIx), Horovod
was built with TensorFlow and a controller, TensorFlow's Keras 2 (tf_keras) matches it, the
profile's environment lines work in a non-interactive shell, the config's data is readable
and valid. With `--on-node`, the same command runs again on a compute node through srun
(`--here`): the GPUs TensorFlow sees against those Slurm allocated, the scratch directory and
its free space against the data it must hold.

    hpctrain doctor --profile mysite --config jobs/configs/fmnist_cnn.yaml --on-node

Exit 0 when a job would run; otherwise 1, with one FAIL line per blocker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpctrain.atomic import size_text, tree_bytes
from hpctrain.slurm import inventory
from hpctrain.slurm.client import slurm_env
from hpctrain.slurm.inventory import find_tool, last_line, run_tool
from hpctrain.slurm.profiles import Profile, load_profile, slurm_minutes
from hpctrain.validation import InputError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not checked here (says where it is checked)
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "--  "}[self.ok]
        fix = f" -> {self.fix}" if self.ok is False and self.fix else ""
        return f"{mark} {self.name}: {self.detail}{fix}"


def check_slurm(env: dict) -> Check:
    res = run_tool(["scontrol", "ping"], env)
    up = res.returncode == 0 and "UP" in res.stdout
    return Check("slurm", up, last_line(res) if not up else " ".join(res.stdout.split()),
                 "load Slurm's commands or set SLURM_CONF; for the embedded test cluster: "
                 "hpctrain cluster up")


def check_partition(profile: Profile, env: dict) -> tuple[Check, list[str]]:
    """The partition and the names of its nodes."""
    parts, res = inventory.read_partitions(env, profile.partition)
    if not profile.partition:
        parts = [p for p in parts if p.default]
    if not parts:
        what = f"partition {profile.partition!r}" if profile.partition else "a default partition"
        names = [p.name for p in inventory.read_partitions(env)[0]]
        return Check("partition", False, f"{what} not found",
                     f"set `partition:` in the profile to one of: {', '.join(names) or '?'}"), []
    part = parts[0]
    problems = []
    if part.state != "UP":
        problems.append(f"state {part.state}")
    if part.max_time and slurm_minutes(profile.time) > slurm_minutes(part.max_time):
        problems.append(f"the profile's time {profile.time} exceeds MaxTime {part.max_time}")
    nodes = inventory.hostnames(part.nodes, env)
    most = min(len(nodes), part.max_nodes or len(nodes))
    if profile.nodes > most:
        problems.append(f"{profile.nodes} nodes asked, it gives at most {most}")
    detail = (f"{part.name}: {part.state}, {len(nodes)} nodes, "
              f"MaxTime {part.max_time or 'UNLIMITED'}")
    return Check("partition", not problems, "; ".join(problems) or detail,
                 "change the profile's time/nodes, or choose another partition"), nodes


def check_nodes(profile: Profile, names: list[str], env: dict) -> Check:
    nodes, res = inventory.read_nodes(names, env)
    if not nodes:
        return Check("nodes", False, last_line(res), "check `scontrol show node`")
    gpus = min(n.gpus(profile.gres_name) for n in nodes)
    cpus = min(n.cpus for n in nodes)
    need_cpus = profile.ntasks_per_node * profile.cpus_per_task
    problems = []
    if profile.gpus_per_node > gpus:
        problems.append(f"{profile.gpus_per_node} GPUs per node asked "
                        f"({profile.gres_name}), the nodes have {gpus}")
    if profile.node_gpus > gpus:
        problems.append(f"the profile says node_gpus {profile.node_gpus}, the nodes have {gpus}")
    if need_cpus > cpus:
        problems.append(f"{need_cpus} CPUs per node asked, the nodes have {cpus}")
    if profile.constraint:
        wanted = set(re.split(r"[&|,*\[\]()]", profile.constraint)) - {""}
        offered = {f for n in nodes for f in n.features}
        if not wanted & offered:
            problems.append(f"constraint {profile.constraint!r}: the nodes offer "
                            f"{', '.join(sorted(offered)) or 'no features'}")
    down = [n.name for n in nodes if not n.usable]
    detail = (f"{len(nodes)} nodes, each {cpus} CPUs and {gpus} {profile.gres_name}"
              + (f"; not usable now: {', '.join(down)}" if down else ""))
    return Check("nodes", not problems, "; ".join(problems) or detail,
                 "lower gpus_per_node / node_gpus / ntasks_per_node in the profile, or fix "
                 "its constraint, to what `scontrol show node` reports")


def check_launcher(profile: Profile, env: dict) -> Check:
    if profile.launcher == "srun":
        plugins, res = inventory.srun_plugins(env)
        ok = any(p.startswith("pmix") for p in plugins)
        return Check("launcher", ok, f"srun --mpi=list: {', '.join(plugins) or last_line(res)}",
                     "this srun has no PMIx: set `launcher: mpirun` (or horovodrun) in the "
                     "profile")
    tool = "mpirun" if profile.launcher == "mpirun" else "horovodrun"
    found = find_tool(tool, env)
    return Check("launcher", bool(found), f"{tool}: {found or 'not found'}",
                 f"install or load {tool}, or set another launcher in the profile")


# One process that loads Horovod's TensorFlow extension (so TensorFlow itself) and asks
# what it was built with: an extension built against another TensorFlow fails right here.
# (`horovodrun --check-build` says the same from six processes, each importing TensorFlow.)
HOROVOD_PROBE = """
import json, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import horovod.tensorflow as hvd
print(json.dumps({k: bool(getattr(hvd, k + "_built")()) for k in
                  ("mpi", "gloo", "nccl", "cuda", "rocm")}))
"""


def check_horovod(env: dict) -> Check:
    res = run_tool(["python", "-c", HOROVOD_PROBE], {**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                   timeout=300)
    fix = ("rebuild Horovod against the installed TensorFlow, with MPI or Gloo "
           "(env/install.sh does)")
    if res.returncode != 0:
        return Check("horovod", False, f"its TensorFlow extension does not load: "
                     f"{last_line(res)}", fix)
    built = json.loads(res.stdout.strip().splitlines()[-1])
    have = [name.upper() if name != "gloo" else "Gloo" for name, ok in built.items() if ok]
    return Check("horovod", bool(built["mpi"] or built["gloo"]),
                 f"TensorFlow extension loads; built with {', '.join(have) or 'nothing'}", fix)


TENSORFLOW_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")


def check_keras(versions: Callable[[str], str | None]) -> Check:
    tf = next((v for v in map(versions, TENSORFLOW_DISTS) if v), None)
    keras2 = versions("tf-keras")
    if tf is None:
        return Check("keras", False, "TensorFlow is not installed", "run env/install.sh")
    if keras2 is None or keras2.split(".")[:2] != tf.split(".")[:2]:
        return Check("keras", False, f"TensorFlow {tf} with tf-keras {keras2}: Keras 3 would "
                     "silently skip Horovod's gradient averaging",
                     f"pip install 'tf-keras=={'.'.join(tf.split('.')[:2])}.*'")
    return Check("keras", True, f"TensorFlow {tf} with tf-keras {keras2} (Keras 2)")


def check_env_setup(profile: Profile, env: dict) -> Check:
    lines = profile.env_setup or [f"source {shlex.quote(sys.prefix)}/bin/activate"]
    script = "\n".join(["set -e", *lines, "command -v hpctrain >/dev/null || "
                        "{ echo 'hpctrain not on PATH' >&2; exit 1; }",
                        'python -c "import hpctrain, horovod"'])
    res = run_tool(["bash", "--noprofile", "--norc", "-c", script], env)
    return Check("environment", res.returncode == 0,
                 "the profile's env_setup works in a non-interactive shell"
                 if res.returncode == 0 else last_line(res),
                 "fix the profile's env_setup lines (module load ..., source .../activate)")


def check_data(config: str | None) -> tuple[Check, int]:
    """The config's staged data and its size in bytes (0 when none)."""
    if not config:
        return Check("data", None, "no --config given"), 0
    from hpctrain.data.layout import check_staged
    from hpctrain.experiment import load_config

    try:
        cfg = load_config(config, [])
        if cfg.synthetic:
            return Check("data", True, "synthetic: no file"), 0
        path = Path(cfg.data).expanduser()
        if "{node}" in str(path):
            return Check("data", None, f"{path}: node-local, checked on a node"), 0
        info = check_staged(path)
    except (InputError, OSError) as e:
        return Check("data", False, str(e).splitlines()[0],
                     "stage it again (hpctrain stage ...) or point the config at it"), 0
    size = tree_bytes(path)
    shape = "x".join(map(str, info["input_shape"]))
    return Check("data", True, f"{path}: {shape}, {size_text(size)}"), size


def check_scratch(profile: Profile, data_bytes: int, here: bool) -> Check:
    if not profile.scratch:
        return Check("scratch", None, "the profile has none: ranks read the data in place")
    path = Path(profile.scratch)
    if not path.is_dir():
        if not here:
            return Check("scratch", None, f"{path} is not on this host: checked with --on-node")
        node = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
        return Check("scratch", False, f"{path} does not exist on {node}",
                     "create it, or fix `scratch:` in the profile")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check("scratch", False, f"{path} is not writable", "fix its permissions")
    free = shutil.disk_usage(path).free
    if free < data_bytes * 1.05:
        return Check("scratch", False, f"{path} has {size_text(free)} free, the data needs "
                     f"{size_text(data_bytes)}", "free space there or choose another scratch")
    return Check("scratch", True, f"{path}: writable, {size_text(free)} free")


def check_gpus(profile: Profile, env: dict) -> Check:
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not visible and not profile.gpus_per_node:
        return Check("gpus", None, "none asked for and none allocated")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    seen = tf.config.list_physical_devices("GPU")
    info = tf.sysconfig.get_build_info()
    versions = f"CUDA {info.get('cuda_version', '-')}, cuDNN {info.get('cudnn_version', '-')}"
    ok = len(seen) == len(visible) and (len(seen) >= profile.gpus_per_node)
    return Check("gpus", ok, f"Slurm allocated {len(visible)} (CUDA_VISIBLE_DEVICES), "
                 f"TensorFlow sees {len(seen)}; TensorFlow built with {versions}",
                 "load the CUDA/cuDNN modules TensorFlow was built with, or install the "
                 "TensorFlow build for this node's driver")


def diagnose(profile_name: str | None, config: str | None, here: bool,
             versions: Callable[[str], str | None]) -> list[Check]:
    env = slurm_env()
    try:
        profile = load_profile(profile_name)
    except InputError as e:
        return [Check("profile", False, str(e), "see env/clusters/example-gpu.yaml")]
    checks = [Check("profile", True, f"{profile.name}: {profile.description or 'no description'}")]
    data, size = check_data(config)
    if here:
        node = os.environ.get("SLURMD_NODENAME", "")
        checks += [Check("node", True, f"{node + ' on ' if node else ''}{os.uname().nodename}"),
                   check_gpus(profile, env), check_scratch(profile, size, here=True), data]
        return checks
    slurm = check_slurm(env)
    checks.append(slurm)
    if slurm.ok:
        part, nodes = check_partition(profile, env)
        checks.append(part)
        if nodes:
            checks.append(check_nodes(profile, nodes, env))
        checks.append(check_launcher(profile, env))
    checks += [check_horovod(env), check_keras(versions), check_env_setup(profile, env), data,
               check_scratch(profile, size, here=False)]
    return checks


def on_node(profile: Profile, argv: list[str]) -> subprocess.CompletedProcess:
    """This command again with --here, on one compute node of the profile's partition."""
    alloc = [*([f"--partition={profile.partition}"] if profile.partition else []),
             *([f"--account={profile.account}"] if profile.account else []),
             *([f"--gres={profile.gres_name}:{profile.gpus_per_node}"]
               if profile.gpus_per_node else []),
             "--nodes=1", "--ntasks=1", "--time=5"]
    env = slurm_env()
    return run_tool(["srun", *alloc, sys.executable, "-m", "hpctrain.cli", "doctor", "--here",
                 *argv], env, timeout=600)
