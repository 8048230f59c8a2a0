"""Several runs through hpctrain's Trainer, one after another, in the processes of one
launch: TensorFlow and Horovod start once instead of once per run.

    mpirun -np 2 python tests/one_launch.py PLAN.json   (or horovodrun -np 2 -H localhost:2)

PLAN.json is a list of runs, `{"name": ..., "config": FILE, "overrides": ["key=value", ...],
"run_dir": DIR}`. Each run gets the whole recipe (set up, restore, fit, finish: the
ranks-in-sync check and report.json in its run_dir) from a clean graph and its own settings
(precision, XLA and seeds are set by every run, not inherited from the one before). No run
here asks for Horovod's timeline: its writer thread would spin on rank 0 until the launch
ends.
Horovod is initialised once (a second `hvd.init()` in the same process does nothing) and
never shut down in between, which MPI would not survive. Prints `one_launch: NAME exit CODE`
after each run (with its wall and this process's CPU seconds) and exits with the worst code;
each rank lists the files TensorFlow's autograph wrote for it in autograph-rankN.json beside
PLAN.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow loads, as `hpctrain train` does

from hpctrain.environment import JobEnvironment, autograph_sources, end_process  # noqa: E402
from hpctrain.experiment import load_config  # noqa: E402


def main(plan_file: str) -> int:
    plan = json.loads(Path(plan_file).read_text())
    import tensorflow as tf

    from hpctrain.report.run_report import RunReporter
    from hpctrain.train.trainer import Trainer

    codes = {}
    for run in plan:
        wall, cpu = time.perf_counter(), time.process_time()
        cfg = load_config(run["config"], run["overrides"])
        tf.keras.backend.clear_session()  # each run starts from a clean graph
        codes[run["name"]] = Trainer(cfg, JobEnvironment.detect(), Path(run["run_dir"]),
                                     RunReporter()).run()
        print(f"one_launch: {run['name']} exit {codes[run['name']]} in "
              f"{time.perf_counter() - wall:.1f} s, {time.process_time() - cpu:.1f} cpu-s",
              flush=True)
    return max(codes.values())


if __name__ == "__main__":
    code = main(sys.argv[1])
    # the files autograph wrote for this rank, which end_process must remove (a test checks)
    Path(sys.argv[1]).with_name(f"autograph-rank{JobEnvironment.detect().rank}.json") \
        .write_text(json.dumps(autograph_sources()))
    end_process(code)  # as `hpctrain train` ends
