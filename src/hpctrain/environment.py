"""The one place that reads the Slurm / MPI / Horovod launcher environment.

Like submitit's `JobEnvironment`: nothing else in hpctrain looks at `SLURM_*`, `OMPI_*`,
`PMIX_*` or `HOROVOD_*` variables. Reading happens when `JobEnvironment.detect()` is called,
never at import time.

Before `hvd.init()` the rank comes from the launcher's variables (for log prefixes and for
deciding who writes); after it, `with_horovod()` takes the authoritative rank, size and local
rank from Horovod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, replace
from typing import NoReturn


def _maybe_int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of `names` that holds an integer, or None."""
    for name in names:
        value = env.get(name, "")
        if value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _first_int(env: Mapping[str, str], *names: str, default: int) -> int:
    found = _maybe_int(env, *names)
    return default if found is None else found


def _cpus_allowed() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class JobEnvironment:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # ranks on this node
    launcher: str = "none"  # srun | mpirun | horovodrun | none
    node_name: str = ""  # Slurm's logical node name (SLURMD_NODENAME) or the host name
    hostname: str = ""
    job_id: str | None = None
    array_task_id: str | None = None
    job_nodelist: str | None = None
    num_nodes: int | None = None
    node_index: int = 0  # this node's index in the job step (SLURM_NODEID)
    cpus_per_task: int | None = None
    restart_count: int = 0
    submit_dir: str | None = None
    cpus_allowed: int = 1  # CPUs this process may run on (its affinity mask)

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None) -> JobEnvironment:
        env = os.environ if env is None else env
        # Measured on the embedded cluster: ranks of mpirun inside an allocation also carry
        # SLURM_STEP_ID / SLURM_PROCID (of the orted step, not the rank); ranks of
        # srun --mpi=pmix carry no OMPI_COMM_WORLD_*. horovodrun --gloo sets HOROVOD_*.
        if "HOROVOD_RANK" in env:
            launcher = "horovodrun"
        elif "OMPI_COMM_WORLD_RANK" in env:
            launcher = "mpirun"
        elif "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
            launcher = "srun"
        else:
            launcher = "none"
        rank = _first_int(env, "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK",
                          "SLURM_PROCID", default=0)
        size = _first_int(env, "HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS",
                          default=1)
        local_rank = _first_int(env, "HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                "SLURM_LOCALID", default=0)
        local_size = _maybe_int(env, "HOROVOD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE")
        if local_size is None and launcher == "srun":
            # SLURM_TASKS_PER_NODE looks like "2(x3),1"; this node's count is not in it by
            # name, so take the step's tasks over its nodes (an even spread, as hpctrain asks)
            tasks = _maybe_int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
            nodes = _maybe_int(env, "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES",
                               "SLURM_NNODES")
            local_size = max(1, tasks // nodes) if tasks and nodes else None
        hostname = socket.gethostname()
        job_id = env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")
        return cls(
            rank=rank,
            size=size,
            local_rank=local_rank,
            launcher=launcher,
            # horovodrun starts every rank from the batch step: its HOROVOD_HOSTNAME is the
            # node it meant, SLURMD_NODENAME the batch node's
            node_name=env.get("HOROVOD_HOSTNAME") or env.get("SLURMD_NODENAME")
            or hostname.split(".")[0],
            hostname=hostname,
            job_id=job_id,
            array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
            job_nodelist=env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
            num_nodes=_maybe_int(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"),
            node_index=_first_int(env, "SLURM_NODEID", default=0),
            cpus_per_task=_maybe_int(env, "SLURM_CPUS_PER_TASK"),
            restart_count=_first_int(env, "SLURM_RESTART_COUNT", default=0),
            submit_dir=env.get("SLURM_SUBMIT_DIR"),
            local_size=local_size or 1,
            cpus_allowed=_cpus_allowed(),
        )

    # Horovod's own defaults since 0.21 (5 ms and 64 MiB before): what a run uses unless set
    HOROVOD_CYCLE_MS = 1.0
    HOROVOD_FUSION_BYTES = 128 * 2**20

    # Horovod's background thread wakes every HOROVOD_CYCLE_TIME ms (1 by default) to look for
    # tensors to reduce. One rank has nothing to reduce in a step, but the wake-ups still take
    # the cores from TensorFlow's threads: measured on the workshop CNN in one process
    # (bench/compute_costs.py), Horovod at 1 ms cost 1 % of the step rate, at 5 ms 0.2 %.
    # A collective then waits up to 5 ms: a few per epoch (metrics, step times, evaluation).
    ONE_RANK_CYCLE_MS = "5"

    def tune_before_init(self, env: MutableMapping[str, str] | None = None) -> dict[str, str]:
        """MPI and Horovod settings hpctrain defaults to in a rank, before hvd.init (Open MPI
        reads its OMPI_MCA_* variables from the process environment at MPI_Init, Horovod its
        HOROVOD_* ones at init). A value already set (by the user, the launcher or a site
        module) wins. Returns what was set.

        mpi_yield_when_idle=1: a waiting rank yields its core instead of busy-polling. Each
        rank shares its core with TensorFlow's threads and Horovod's background thread, so
        the polling took compute from them: 2 ranks x 1 thread here went from 0.75 to 1.10
        of 1 rank x 2 threads (results/benchmarks, Horovod overhead). Open MPI turns it on
        by itself only when it sees more ranks than cores.

        HOROVOD_CYCLE_TIME=5 when the launcher starts one rank (ONE_RANK_CYCLE_MS); with more
        ranks the cycle delays every allreduce, so Horovod's default stays."""
        target: MutableMapping[str, str] = os.environ if env is None else env
        defaults = {"OMPI_MCA_mpi_yield_when_idle": "1"}
        if self.size == 1:
            defaults["HOROVOD_CYCLE_TIME"] = self.ONE_RANK_CYCLE_MS
        added = {k: v for k, v in defaults.items() if k not in target}
        target.update(added)
        return added

    def with_horovod(self, hvd) -> JobEnvironment:
        """The same environment with rank, size and local ranks from an initialised Horovod."""
        return replace(self, rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(),
                       local_size=hvd.local_size())

    def default_threads(self) -> int:
        """Intra-op threads for one rank when the config does not say: Slurm's
        --cpus-per-task inside a job step, else the CPUs this process may use shared by the
        ranks on this node (a laptop or an interactive node: all of them for one rank)."""
        if self.cpus_per_task:
            return self.cpus_per_task
        return max(1, self.cpus_allowed // max(1, self.local_size))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def in_slurm_job(self) -> bool:
        return self.job_id is not None

    def as_dict(self) -> dict:
        return asdict(self)


def mpi_world(env: JobEnvironment):
    """mpi4py's COMM_WORLD when the launcher started several ranks, else None (one process:
    MPI is not initialised at all). Refuses a launch whose ranks cannot see each other, e.g.
    `srun` without `--mpi=pmix`, where every task would be a world of its own."""
    if env.size <= 1:
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() != env.size or comm.Get_rank() != env.rank:
        raise RuntimeError(
            f"the launcher started {env.size} tasks, but MPI sees a world of "
            f"{comm.Get_size()} (rank {comm.Get_rank()}): start with `srun --mpi=pmix` "
            "or `mpirun`")
    return comm


def process_start() -> float:
    """Unix time at which this process started, to the kernel's clock tick (10 ms): its start
    in ticks since boot (/proc/self/stat, field 22) on today's boot-time clock. psutil's
    create_time() adds /proc/stat's boot time in whole seconds instead, up to 1 s off (0.59 s
    early on the machine where this was found, which every startup time then included)."""
    import time

    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()  # fields 3.. (the name may hold ' ')
        since_boot = int(after_name[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + since_boot
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        import psutil

        return psutil.Process().create_time()


def autograph_sources() -> list[str]:
    """The files TensorFlow's autograph wrote for this process: each converted function is
    loaded from one (tensorflow/python/autograph/pyct/loader.py) as a module it keeps in
    sys.modules under the file's name."""
    return [str(getattr(module, "__file__", "")) for name, module in list(sys.modules.items())
            if name.startswith("__autograph_generated_file")]


def remove_autograph_sources() -> None:
    """Remove this process's autograph files (what the exit handlers os._exit skips would
    do)."""
    for path in autograph_sources():
        with contextlib.suppress(OSError):
            os.remove(path)


def end_process(code: int | None) -> NoReturn:
    """Exit with `code`. A process that loaded TensorFlow skips Python's finalization: its
    output flushed and Horovod shut down (what their exit handlers would do), then os._exit.
    Finalizing TensorFlow's thousands of modules took ~1.2 CPU-s and ~1 s of wall time of
    every rank here, paid again by every segment of every job, and an input iterator still
    alive at that point hung the process. TensorFlow's autograph writes each function it
    converts to a file in the temporary directory and leaves its removal to an exit handler:
    those files are removed here, or every rank of every run would leave dozens behind."""
    code = 0 if code is None else code
    if "tensorflow" in sys.modules:
        hvd = sys.modules.get("horovod.tensorflow")
        if hvd is not None and hvd.is_initialized():
            hvd.shutdown()
        remove_autograph_sources()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    sys.exit(code)
