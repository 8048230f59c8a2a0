"""The `hpctrain` command. Each module here turns one group of commands' flags into the
library's own request objects and calls; no argparse namespace travels further than this
package, and every parser lives here.

    cluster.py   cluster, doctor, profile init
    data.py      stage
    jobs.py      train, submit, sweep, study, status, interactive, postmortem
    reports.py   report, project, predict, noise-scale
    bench.py     bench allreduce
    options.py   the flags several commands share (config, job options, submission)
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from hpctrain.cli import bench, cluster, data, jobs, reports
from hpctrain.environment import end_process
from hpctrain.validation import InputError

WORKFLOW = """\
the workflow, one example each (the embedded cluster runs Slurm on this machine):
  1. hpctrain cluster up
       start the embedded Slurm cluster (skip on a real cluster: use --profile)
  2. hpctrain stage fashion-mnist --source /usr/share/datasets/fashion-mnist \\
         --out data/fashion-mnist.h5
       stage the data into HDF5 once
  3. hpctrain submit --config jobs/configs/fmnist_cnn.yaml:short --nodes 2 --wait
       render job.sbatch into results/<experiment>/<run-id>/, sbatch it, wait
  4. hpctrain report results/fmnist_cnn/<run-id>
       print the run's report (accuracy, images/s, ranks in sync)

an image tree (ImageNet layout) instead of step 2:
     hpctrain stage imagefolder --source data/fmnist-tree --out data/fmnist-tree-32 --size 32

scaling: hpctrain study --config C --nodes 1,2,4 (then hpctrain project --study DIR)

on a real cluster instead of step 1: hpctrain profile init mysite (a profile from
sinfo/scontrol), then hpctrain doctor --profile mysite --on-node (will a job run?)

also: hpctrain train (one rank, or under srun/mpirun/horovodrun), sweep, status,
interactive; `hpctrain COMMAND --help` for each."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hpctrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="HPC batch training on Slurm: stage data into HDF5, submit "
        "Horovod-distributed Keras training, read the timing and accuracy reports.",
        epilog=WORKFLOW)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (cluster, data, jobs, reports, bench):  # the order `hpctrain --help` lists them
        group.add(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"hpctrain {args.command}: error: {e}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The `hpctrain` command (the entry point in pyproject.toml): main(), then the end."""
    end_process(main())
