"""`hpctrain profile init NAME`: a cluster profile written from the live cluster.

Slurm tells the partitions (MaxTime, MaxNodes, node count), what the partition's nodes have
(CPUs, memory, GPUs and their gres type, node features), whether srun offers PMIx, the
user's default account and the node-local TmpFS. Only what Slurm cannot tell is asked for
(or given as flags): the account to charge, the environment lines, the scratch directory.
Every value chosen on the user's behalf carries a `# guess:` comment. The draft is checked
as any profile is (the profile model) and, through the real job script, by
`sbatch --test-only`, then written atomically; an existing profile is never overwritten
unless asked (--force).

    hpctrain profile init mysite --partition gpu --account proj42 \\
        --env-line 'module load cuda/12.3 openmpi/4.1' --scratch '$TMPDIR'
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hpctrain.atomic import write_text
from hpctrain.resources import profile_dirs
from hpctrain.slurm import inventory
from hpctrain.slurm.inventory import Node, Partition, last_line, run_tool
from hpctrain.slurm.profiles import Profile, ProfileError, slurm_minutes


@dataclass(frozen=True)
class Answers:
    """What the user says (flags or answers to prompts); None: not said."""

    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    env_setup: tuple[str, ...] | None = None
    scratch: str | None = None


@dataclass(frozen=True)
class Survey:
    """What the live cluster says."""

    cluster: str
    partitions: list[Partition]
    nodes: dict[str, list[Node]]  # partition name -> its nodes
    mpi_plugins: list[str]
    default_account: str | None = None
    tmpfs: str | None = None


@dataclass
class Draft:
    """The profile's values in the order written, each with its comment."""

    values: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)

    def set(self, key: str, value, comment: str = "") -> None:
        self.values[key] = value
        if comment:
            self.comments[key] = comment


def _config_value(text: str, key: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            value = value.strip()
            return None if value in ("", "(null)") else value
    return None


def survey(env: dict) -> Survey:
    """Ask Slurm; a ProfileError (one line) if it does not answer."""
    parts, res = inventory.read_partitions(env)
    if not parts:
        raise ProfileError(f"Slurm lists no partitions ({last_line(res)}); is SLURM_CONF set "
                           "and slurmctld up? (scontrol ping)")
    nodes = {}
    for part in parts:
        nodes[part.name] = inventory.read_nodes(inventory.hostnames(part.nodes, env), env)[0]
    plugins = inventory.srun_plugins(env)[0]
    user = os.environ.get("USER") or getpass.getuser()
    acct = run_tool(["sacctmgr", "-n", "-P", "show", "user", user, "format=DefaultAccount"], env)
    account = acct.stdout.strip().splitlines()[0] if acct.returncode == 0 and \
        acct.stdout.strip() else None
    config = run_tool(["scontrol", "show", "config"], env).stdout
    return Survey(_config_value(config, "ClusterName") or "?", parts, nodes, plugins,
                  account, _config_value(config, "TmpFS"))


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} ({n} node{'s' * (n > 1)})" for k, n in sorted(counter.items()))


def _partition(sv: Survey, wanted: str | None) -> Partition:
    names = [p.name for p in sv.partitions]
    if wanted:
        match = [p for p in sv.partitions if p.name == wanted]
        if not match:
            raise ProfileError(f"partition {wanted!r} not found; Slurm has: {', '.join(names)}")
        return match[0]
    defaults = [p for p in sv.partitions if p.default]
    if defaults:
        return defaults[0]
    if len(sv.partitions) == 1:
        return sv.partitions[0]
    raise ProfileError(f"no default partition: pass --partition, one of {', '.join(names)}")


def draft(name: str, sv: Survey, ans: Answers) -> Draft:
    """The profile's values and comments from the survey and the answers (pure)."""
    part = _partition(sv, ans.partition)
    nodes = sv.nodes.get(part.name, [])
    if ans.constraint:
        wanted = ans.constraint
        nodes = [n for n in nodes if wanted in n.features]
        if not nodes:
            offered = Counter(f for n in sv.nodes.get(part.name, []) for f in n.features)
            raise ProfileError(f"constraint {wanted!r}: no node of partition {part.name} has "
                               f"that feature; they offer {_counts(offered) or 'none'}")
    if not nodes:
        raise ProfileError(f"partition {part.name} has no nodes Slurm can show")
    d = Draft()
    others = [p.name for p in sv.partitions if p.name != part.name]
    d.set("description", f"{name}: partition {part.name} of Slurm cluster {sv.cluster}",
          f"written by `hpctrain profile init` on {dt.date.today()}")
    d.set("partition", part.name, "; ".join(
        [*(["guess: Slurm's default partition"] if not ans.partition else []),
         *([f"others: {', '.join(others)}"] if others else [])]))
    d.set("account", ans.account or sv.default_account,
          "" if ans.account else ("guess: your default account in Slurm's accounting"
                                  if sv.default_account else "--account, if your site "
                                  "charges projects"))
    d.set("qos", None, "e.g. normal, high")
    features = Counter(f for n in nodes for f in n.features)
    d.set("constraint", ans.constraint, f"node features here: {_counts(features)}"
          if features else "the nodes have no features")
    gpus = min(n.gpus() for n in nodes)
    types = Counter(t for n in nodes for t in n.gpu_types())
    typed = len(types) == 1 and all(n.gpu_types() for n in nodes)
    gres = f"gpu:{next(iter(types))}" if typed else "gpu"
    d.set("node_gpus", gpus, "the fewest GPUs of a node in the partition")
    d.set("node_cpus", min(n.cpus for n in nodes),
          f"CPUs; memory per node {min(n.memory_mb for n in nodes)} MB (RealMemory); add "
          "--mem=... to extra_sbatch if your site asks for it")
    max_nodes = min(len(nodes), part.max_nodes or len(nodes))
    d.set("max_nodes", max_nodes, f"{len(nodes)} nodes" + (
        f", MaxNodes {part.max_nodes}" if part.max_nodes else "")
        + (f" with feature {ans.constraint}" if ans.constraint else ""))
    d.set("max_time", part.max_time, "the partition's MaxTime" if part.max_time
          else "MaxTime UNLIMITED")
    d.set("gres_name", gres, (f"every node's GPUs are {next(iter(types))}; plain gpu asks "
                              "for any type" if typed else
                              f"GPU types: {_counts(types)}; gpu:<type> picks one"
                              if types else "untyped gres"))
    ranks = max(1, gpus)
    d.set("nodes", 1)
    d.set("ntasks_per_node", ranks, "guess: one Horovod rank per GPU" if gpus else
          "guess: one rank per node (no GPUs)")
    d.set("cpus_per_task", max(1, min(n.cpus for n in nodes) // ranks),
          "guess: the node's CPUs shared by its ranks")
    d.set("gpus_per_node", gpus)
    one_hour = "01:00:00"
    limit = part.max_time
    d.set("time", limit if limit and slurm_minutes(limit) < 60 else one_hour,
          "guess: the default time limit of a job")
    pmix = any(p.startswith("pmix") for p in sv.mpi_plugins)
    d.set("launcher", "srun" if pmix else "mpirun",
          f"srun --mpi=list offers {', '.join(sv.mpi_plugins) or 'nothing'}"
          + ("" if pmix else ": no PMIx, so mpirun"))
    d.set("env_setup", list(ans.env_setup or ()),
          "" if ans.env_setup else "empty: the job activates the virtualenv hpctrain runs "
          f"from ({sys.prefix}); e.g. - module load cuda openmpi")
    d.set("scratch", ans.scratch, "" if ans.scratch else (
        f"Slurm's TmpFS is {sv.tmpfs}: \"$TMPDIR\" copies the data to node-local disk"
        if sv.tmpfs else "node-local directory the data is copied to; null: read in place"))
    d.set("extra_sbatch", [], "e.g. - --exclusive")
    for key in ("signal_seconds", "max_restarts"):
        d.set(key, Profile.model_fields[key].default)
    return d


def _scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip() \
        .removesuffix("\n...").removesuffix("...").strip()


def render(name: str, d: Draft, command: str) -> str:
    """The profile's YAML text, one key a line with its comment (pure)."""
    lines = [f"# {name}: a cluster profile written from the live cluster by", f"#   {command}",
             "# Values marked `guess` were chosen for you: check them. Then:",
             f"#   hpctrain doctor --profile {name}"]
    for key, value in d.values.items():
        comment = f"  # {d.comments[key]}" if key in d.comments else ""
        if isinstance(value, list) and value:
            lines.append(f"{key}:{comment}")
            lines += [f"  - {_scalar(v)}" for v in value]
        else:
            lines.append(f"{key}: {_scalar(value)}{comment}")
    return "\n".join(lines) + "\n"


def output_path(name: str, out: str | None) -> Path:
    if out:
        return Path(out)
    return profile_dirs()[0] / f"{name}.yaml"


def check(name: str, text: str, config: str | None, env: dict) -> tuple[Profile, str]:
    """The draft parsed as any profile is, and Slurm's verdict on the real job script it
    gives (`sbatch --test-only`, nothing queued); a ProfileError or JobSpecError if not."""
    from hpctrain.slurm.client import SlurmClient
    from hpctrain.slurm.profiles import load_profile
    from hpctrain.slurm.request import Request, resolve
    from hpctrain.slurm.script import render_sbatch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        profile = load_profile(str(path))
        if not config:
            return profile, "not tried (no --config to render a job script from)"
        resolved = resolve(Request(config=config, profile=str(path)), check_data_file=False,
                           run_dir=Path(tmp) / "run")
        return profile, SlurmClient(env).test_only(render_sbatch(resolved.spec))


def write(path: Path, text: str, force: bool) -> None:
    if path.exists() and not force:
        raise ProfileError(f"{path} exists; --force replaces it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    if path.read_text() != text:
        raise ProfileError(f"{path}: what was written does not read back")
