"""JobEnvironment: the launcher, rank and Slurm facts read from each launcher's variables."""

from __future__ import annotations

import os

from hpctrain.environment import JobEnvironment


def test_plain_process():
    env = JobEnvironment.detect({})
    assert (env.rank, env.size, env.local_rank, env.launcher) == (0, 1, 0, "none")
    assert env.job_id is None and not env.in_slurm_job and env.is_main


def test_srun_step():
    env = JobEnvironment.detect({
        "SLURM_JOB_ID": "17", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1", "SLURMD_NODENAME": "node2", "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_PER_TASK": "8", "SLURM_RESTART_COUNT": "1",
        "PMIX_RANK": "3"})
    assert (env.rank, env.size, env.local_rank, env.launcher) == (3, 4, 1, "srun")
    assert env.node_name == "node2" and env.num_nodes == 2 and env.cpus_per_task == 8
    assert env.restart_count == 1 and env.job_id == "17" and not env.is_main


def test_mpirun_inside_a_batch_job():
    env = JobEnvironment.detect({"SLURM_JOB_ID": "5", "OMPI_COMM_WORLD_RANK": "1",
                                 "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                                 "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert (env.rank, env.size, env.launcher) == (1, 2, "mpirun")


def test_mpirun_rank_started_by_an_orted_srun_step():
    """Measured: mpirun inside an allocation starts its daemons with srun, so its ranks carry
    the orted step's SLURM_STEP_ID and SLURM_PROCID (the orted's index, not the rank)."""
    env = JobEnvironment.detect({"SLURM_JOB_ID": "5", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
                                 "SLURMD_NODENAME": "node1", "OMPI_COMM_WORLD_RANK": "1",
                                 "OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "1"})
    assert (env.rank, env.size, env.launcher, env.node_name) == (1, 4, "mpirun", "node1")


def test_horovodrun_gloo():
    env = JobEnvironment.detect({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2",
                                 "HOROVOD_LOCAL_RANK": "1", "HOROVOD_HOSTNAME": "node2",
                                 "SLURMD_NODENAME": "node1", "SLURM_PROCID": "0"})
    assert (env.rank, env.size, env.local_rank, env.launcher) == (1, 2, 1, "horovodrun")
    assert env.node_name == "node2"  # the node horovodrun meant, not the batch step's


def test_array_job_id():
    env = JobEnvironment.detect({"SLURM_JOB_ID": "21", "SLURM_ARRAY_JOB_ID": "20",
                                 "SLURM_ARRAY_TASK_ID": "1"})
    assert env.job_id == "20" and env.array_task_id == "1"


def test_with_horovod_takes_ranks_from_horovod():
    class FakeHvd:  # the four calls JobEnvironment uses
        rank = staticmethod(lambda: 1)
        size = staticmethod(lambda: 2)
        local_rank = staticmethod(lambda: 0)
        local_size = staticmethod(lambda: 2)

    env = JobEnvironment.detect({"SLURM_PROCID": "0"}).with_horovod(FakeHvd)
    assert (env.rank, env.size, env.local_rank, env.local_size) == (1, 2, 0, 2)


def test_default_threads_use_the_allowed_cpus():
    """Outside Slurm one rank takes every CPU it may run on; ranks on one node share them;
    inside a job step Slurm's --cpus-per-task decides."""
    cpus = len(os.sched_getaffinity(0))
    alone = JobEnvironment.detect({})
    assert alone.cpus_allowed == cpus and alone.default_threads() == cpus
    two = JobEnvironment.detect({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2",
                                 "HOROVOD_LOCAL_SIZE": "2"})
    assert two.local_size == 2 and two.default_threads() == max(1, cpus // 2)
    srun = JobEnvironment.detect({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
                                  "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2"})
    assert srun.local_size == 4
    step = JobEnvironment.detect({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
                                  "SLURM_CPUS_PER_TASK": "7"})
    assert step.default_threads() == 7


def test_process_start_is_when_the_process_started():
    """Startup times count from it: it must lie between just before the launch and the
    moment the child reads it (psutil's create_time was 0.59 s early on one machine)."""
    import subprocess
    import sys
    import time

    before = time.time()
    out = subprocess.run([sys.executable, "-c", "import time; t = time.time(); from "
                          "hpctrain.environment import process_start; print(process_start(), t)"],
                         capture_output=True, text=True, check=True).stdout.split()
    start, read_at = float(out[0]), float(out[1])
    assert before - 0.02 <= start <= read_at  # one clock tick (10 ms) of slack, and some


def test_end_process_flushes_and_skips_finalization_once_tensorflow_loaded(tmp_path):
    """end_process: with TensorFlow loaded (a stand-in module here) the output and log
    handlers are flushed and the exit code kept, but no exit handler runs (os._exit) and
    autograph's files are removed by end_process itself; without it, the normal exit
    (handlers run)."""
    import subprocess
    import sys

    script = tmp_path / "end.py"
    script.write_text(
        "import atexit, logging, sys, types\n"
        "from hpctrain.environment import end_process\n"
        "if sys.argv[1] == 'tf':\n"
        "    sys.modules['tensorflow'] = types.ModuleType('tensorflow')\n"
        f"logging.basicConfig(filename={str(tmp_path / 'log.txt')!r}, level=logging.INFO)\n"
        "logging.info('logged')\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        # what autograph leaves for an exit handler: a module loaded from a temporary file
        f"source = {str(tmp_path / '__autograph_generated_filex1.py')!r}\n"
        "open(source, 'w').write('x = 1\\n')\n"
        "m = types.ModuleType('__autograph_generated_filex1'); m.__file__ = source\n"
        "sys.modules[m.__name__] = m\n"
        "sys.stdout.write('buffered, no newline')\n"
        "end_process(3)\n")
    for mode, handlers in (("tf", False), ("plain", True)):
        res = subprocess.run([sys.executable, str(script), mode], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
        assert res.returncode == 3, res.stderr
        assert res.stdout.startswith("buffered, no newline")
        assert ("exit handler ran" in res.stdout) == handlers, mode
        assert "logged" in (tmp_path / "log.txt").read_text()
        # removed where the exit handlers are skipped; left to them otherwise
        assert (tmp_path / "__autograph_generated_filex1.py").exists() == handlers, mode
