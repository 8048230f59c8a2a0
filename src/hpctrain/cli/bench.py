"""`hpctrain bench allreduce`: the cluster's allreduce performance through Horovod, measured
in a job (bench/allreduce.py), or read from nccl-tests' output (bench/nccl_tests.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hpctrain.cli.options import job_options
from hpctrain.validation import InputError


def _allreduce(args) -> int:
    from hpctrain.bench import allreduce
    from hpctrain.resources import results_dir
    from hpctrain.scaling import network
    from hpctrain.slurm.client import SlurmError
    from hpctrain.slurm.job_options import JobOptions
    from hpctrain.slurm.request import Request

    if args.render:
        out = Path(args.render)
        try:
            files = allreduce.render(out)
        except network.MeasurementError as e:
            raise InputError(str(e)) from None
        print("\n".join(allreduce.summary_lines(network.load(out / "allreduce.json"))))
        print("written: " + ", ".join(str(p) for p in files.values()))
        return 0
    if args.from_nccl_tests:
        return _from_nccl_tests(args)
    nodes = allreduce.parse_nodes(args.nodes)
    plan = allreduce.Plan(tuple(nodes), tuple(allreduce.message_sizes(
        allreduce.parse_bytes(args.min_bytes), allreduce.parse_bytes(args.max_bytes))),
        args.warmup, args.iters, args.cycle_ms)
    if args.worker:
        return allreduce.worker(Path(args.out), plan)
    job = JobOptions.taken_from(args, exclude=("nodes", "signal_seconds", "max_restarts"))
    req = Request(config="", profile=args.profile, job=job.replace(nodes=nodes[-1]),
                  job_name=args.job_name, venv=args.venv,
                  env_setup=tuple(args.env_setup or ()))
    out = Path(args.out).resolve() if args.out else \
        results_dir() / "network" / time.strftime("allreduce-%Y%m%d-%H%M%S")
    try:
        done = allreduce.submit_and_wait(req, plan, out, args.wait_timeout,
                                         dry_run=args.dry_run)
    except SlurmError as e:  # as every submitting command says it: one line, exit 1
        print(f"hpctrain bench allreduce: error: {e}", file=sys.stderr)
        return 1
    if not isinstance(done, allreduce.Measured):  # a dry run
        for _, script, verdict in done.scripts:
            print(script, end="")
            print(f"sbatch --test-only: {verdict}")
        return 0
    if not done.files:
        print(f"job {done.job_id} ended {done.state} without a result: see "
              f"{out}/slurm-{done.job_id}.out")
        return 1
    print("\n".join(allreduce.summary_lines(network.load(out / "allreduce.json"))))
    print(f"report: {done.files['README.md']}\nplot: {done.files['allreduce.png']}\n"
          f"project with it: hpctrain project ... --network {out / 'allreduce.json'}")
    return 0 if done.state == "COMPLETED" else 1


def _from_nccl_tests(args) -> int:
    """allreduce.json, README.md and the plot from all_reduce_perf outputs; nothing run."""
    from hpctrain.atomic import write_json
    from hpctrain.bench import allreduce, nccl_tests
    from hpctrain.resources import results_dir
    from hpctrain.slurm.client import SlurmError
    from hpctrain.slurm.submit import create_run_dir

    try:
        data = nccl_tests.benchmark([Path(f) for f in args.from_nccl_tests])
    except nccl_tests.NcclTestsError as e:
        raise InputError(str(e)) from None
    out = Path(args.out) if args.out else \
        results_dir() / "network" / time.strftime("nccl-tests-%Y%m%d-%H%M%S")
    try:
        create_run_dir(out, "output directory")
    except SlurmError as e:
        raise InputError(f"{e}: give a new --out") from None
    write_json(out / "allreduce.json", data)
    files = allreduce.render(out)
    print("\n".join(allreduce.summary_lines(data)))
    print(f"report: {files['README.md']}\nplot: {files['allreduce.png']}\n"
          f"project with it: hpctrain project ... --network {out / 'allreduce.json'}")
    return 0


def add(sub) -> None:
    b = sub.add_parser("bench", help="measure the cluster: `bench allreduce`")
    kinds = b.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    a = kinds.add_parser(
        "allreduce", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="allreduce time and bandwidth against message size through Horovod, on 1..N "
        "nodes in one job",
        description="Time Horovod's allreduce from --min-bytes to --max-bytes on the first "
        "1, 2, ... nodes of one job\n(every node count in --nodes; the job asks for the "
        "largest), with nccl-tests' algorithm and\nbus bandwidths; writes allreduce.json, "
        "README.md and allreduce.png into --out.\n`hpctrain project --network "
        "OUT/allreduce.json` projects with the network measured.",
        epilog="examples:\n  hpctrain bench allreduce --nodes 1,2,4\n"
        "  hpctrain bench allreduce --nodes 1,2,4,8 --ntasks-per-node 4 --gpus-per-node 4 "
        "--profile mysite \\\n      --out results/network/mysite\n"
        "  hpctrain bench allreduce --render results/network/mysite   # again from the JSON\n"
        "  hpctrain bench allreduce --from-nccl-tests nccl-1node.txt nccl-4nodes.txt \\\n"
        "      --out results/network/mysite-nccl   # what all_reduce_perf printed")
    a.add_argument("--nodes", default="1,2", help="node counts to measure (default 1,2)")
    a.add_argument("--min-bytes", default="8", help="smallest message (default 8)")
    a.add_argument("--max-bytes", default="256M", help="largest message, doubling from "
                   "--min-bytes (default 256M; K, M, G: powers of 1024)")
    a.add_argument("--warmup", type=int, default=5, help="untimed allreduces per size "
                   "(default 5)")
    a.add_argument("--iters", type=int, default=20, help="timed allreduces per size "
                   "(default 20)")
    a.add_argument("--cycle-ms", type=float, default=0.1, help="HOROVOD_CYCLE_TIME while "
                   "measuring (default 0.1: a collective waits for Horovod's next cycle, "
                   "which at training's 1 ms would hide the network's latency; the fit "
                   "subtracts it)")
    a.add_argument("--out", help="output directory, new (default "
                   "results/network/allreduce-<date>)")
    a.add_argument("--render", metavar="DIR", help="write DIR's README.md and plot again "
                   "from its allreduce.json; run nothing")
    a.add_argument("--from-nccl-tests", nargs="+", metavar="FILE",
                   help="read NVIDIA nccl-tests all_reduce_perf outputs (one per node count) "
                   "instead of measuring: the same allreduce.json, README and plot in --out")
    a.add_argument("--job-name")
    a.add_argument("--venv", help="virtualenv the job activates (default: this one), unless "
                   "the profile has env_setup")
    a.add_argument("--env-setup", action="append", metavar="LINE",
                   help="shell line replacing the profile's env_setup (repeatable)")
    a.add_argument("--dry-run", action="store_true",
                   help="print the script and run sbatch --test-only; queue nothing")
    a.add_argument("--wait-timeout", type=float, default=3600.0)
    a.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # in the job
    job_options(a, exclude=("nodes", "signal_seconds", "max_restarts"))
    a.set_defaults(func=_allreduce)
