"""The `hpctrain` command: cluster, stage, submit, train, report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hpctrain.config import ConfigError
from hpctrain.sbatch import JobSpecError
from hpctrain.staging import StagingError

BAD_INPUT = (ConfigError, StagingError, JobSpecError)


def _cluster(args) -> int:
    from hpctrain.cluster import ClusterError, EmbeddedCluster

    c = EmbeddedCluster(root=args.dir) if args.dir else EmbeddedCluster()
    try:
        if args.action == "up":
            c.up(timeout=args.timeout)
            print(f"embedded cluster up: {c.nodes} nodes; export SLURM_CONF={c.slurm_conf}")
        elif args.action == "down":
            stopped = c.down()
            print(f"stopped {len(stopped)} daemon(s)" + (f": {' '.join(stopped)}"
                                                        if stopped else ""))
        else:
            pids = c.running()
            for name, pid in pids.items():
                print(f"{name:16s} {'pid ' + str(pid) if pid else 'not running'}")
            if c.is_up():
                print(c.sinfo(), end="")
                print(f"export SLURM_CONF={c.slurm_conf}")
            else:
                print("embedded cluster is not (fully) up: hpctrain cluster up")
                return 1
    except ClusterError as e:
        print(f"hpctrain cluster: error: {e}", file=sys.stderr)
        return 1
    return 0


def _stage(args) -> int:
    from hpctrain.staging import stage

    summary = stage(args.dataset, Path(args.source), Path(args.out),
                    compression=None if args.compression == "none" else args.compression)
    print(f"staged {summary['counts']['train']} train + {summary['counts']['test']} test "
          f"images from {summary['format']} into {summary['out']} "
          f"({summary['bytes'] / 1e6:.1f} MB)")
    return 0


def _submit(args) -> int:
    from hpctrain.submit import SubmitError, submit

    try:
        return submit(args)
    except SubmitError as e:
        print(f"hpctrain submit: error: {e}", file=sys.stderr)
        return 1


def _train(args) -> int:
    from hpctrain.train import main

    return main(args.train_args)  # hpctrain.train parses its own options


def _report(args) -> int:
    from hpctrain.fsutil import write_text
    from hpctrain.reporting import load_report, render_markdown
    from hpctrain.tables import accuracy_table

    missing = [d for d in args.run_dirs if not (Path(d) / "report.json").is_file()]
    if missing:
        print(f"hpctrain report: error: {missing[0]}/report.json not found", file=sys.stderr)
        return 1
    reports = [load_report(d) for d in args.run_dirs]
    if args.table:
        base = Path(args.table).resolve().parent
        links = [os.path.relpath(Path(d).resolve() / "report.md", base) for d in args.run_dirs]
        text = accuracy_table(reports, links=links)
        write_text(args.table, text)
        print(text, end="")
        return 0
    for report in reports:
        print(json.dumps(report, indent=2) if args.json else render_markdown(report), end="\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpctrain", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cluster", help="the embedded Slurm test cluster on this host")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--dir", help="state directory (default .cluster/ or $HPCTRAIN_CLUSTER_DIR)")
    c.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for idle nodes")
    c.set_defaults(func=_cluster)

    s = sub.add_parser("stage", help="stage MNIST-format data into HDF5")
    s.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    s.add_argument("--source", required=True, help="directory of IDX files or a .npz")
    s.add_argument("--out", required=True, help="HDF5 file to write")
    s.add_argument("--compression", choices=["lzf", "gzip", "none"], default="lzf")
    s.set_defaults(func=_stage)

    t = sub.add_parser("train", add_help=False, prefix_chars="\0",
                       help="train one config (one rank, or under a launcher); --help for more")
    t.add_argument("train_args", nargs=argparse.REMAINDER)
    t.set_defaults(func=_train)

    b = sub.add_parser("submit", help="render job.sbatch into a run directory and sbatch it")
    b.add_argument("--config", required=True, help="experiment YAML, optionally FILE:variant")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    b.add_argument("--nodes", type=int, default=1)
    b.add_argument("--ntasks-per-node", type=int, default=1)
    b.add_argument("--cpus-per-task", type=int, default=1)
    b.add_argument("--gpus-per-node", type=int, default=0)
    b.add_argument("--time", default="00:30:00")
    b.add_argument("--partition")
    b.add_argument("--account")
    b.add_argument("--job-name")
    b.add_argument("--run-dir", help="default results/<experiment>/<run-id>")
    b.add_argument("--venv", help="virtualenv the job activates (default: this one)")
    b.add_argument("--env-setup", action="append", metavar="LINE",
                   help="shell line replacing the venv activation (repeatable), e.g. "
                        "'module load tensorflow/2.21'")
    b.add_argument("--dry-run", action="store_true", help="print the script, submit nothing")
    b.add_argument("--wait", action="store_true", help="wait for the job, print its report")
    b.add_argument("--wait-timeout", type=float, default=3600.0)
    b.set_defaults(func=_submit)

    r = sub.add_parser("report", help="print run reports, or an accuracy table of several")
    r.add_argument("run_dirs", nargs="+", metavar="run_dir")
    r.add_argument("--json", action="store_true", help="print report.json")
    r.add_argument("--table", metavar="FILE.md",
                   help="write one accuracy table of all the runs (and print it)")
    r.set_defaults(func=_report)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BAD_INPUT as e:
        print(f"hpctrain {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
