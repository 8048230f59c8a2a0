"""The `hpctrain` command. The CLI turns flags into the library's own request objects; no
argparse namespace travels further than this file."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from hpctrain.environment import end_process
from hpctrain.slurm.script import LAUNCHERS
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


def _cluster(args) -> int:
    from hpctrain.cluster.embedded import ClusterError, EmbeddedCluster

    c = EmbeddedCluster(root=args.dir) if args.dir else EmbeddedCluster()
    try:
        if args.action == "up":
            c.up(timeout=args.timeout)
            print(f"embedded cluster {c.cluster_name} up: {c.nodes} nodes; "
                  f"export SLURM_CONF={c.slurm_conf}")
        elif args.action == "down":
            stopped = c.down()
            print(f"stopped {len(stopped)} daemon(s)" + (f": {' '.join(stopped)}"
                                                        if stopped else ""))
        else:
            for name, pid in c.running().items():
                print(f"{name:16s} {'pid ' + str(pid) if pid else 'not running'}")
            if not c.is_up():
                print("embedded cluster is not (fully) up: hpctrain cluster up")
                return 1
            print(c.sinfo(), end="")
            print(f"export SLURM_CONF={c.slurm_conf}")
    except ClusterError as e:
        print(f"hpctrain cluster: error: {e}", file=sys.stderr)
        return 1
    return 0


def _stage(args) -> int:
    from hpctrain.data.stage_mnist import stage

    summary = stage(args.dataset, Path(args.source), Path(args.out),
                    compression=None if args.compression == "none" else args.compression)
    print(f"staged {summary['counts']['train']} train + {summary['counts']['test']} test "
          f"images from {summary['format']} into {summary['out']} "
          f"({summary['bytes'] / 1e6:.1f} MB)")
    return 0


def _stage_imagefolder(args) -> int:
    from hpctrain.data.stage_imagefolder import Options, stage_imagefolder
    from hpctrain.environment import JobEnvironment

    env = JobEnvironment.detect()
    opts = Options(source=Path(args.source), out=Path(args.out), size=args.size,
                   shards=args.shards, policy=args.resize,
                   compression=None if args.compression == "none" else args.compression,
                   workers=args.workers or env.default_threads(),
                   max_unreadable=args.max_unreadable, seed=args.seed)
    log = print if env.rank == 0 else (lambda line: print(line, file=sys.stderr))
    stage_imagefolder(opts, env, log=log)
    return 0


def _stage_local_copy(args) -> int:
    from hpctrain.data.local_copy import copy_for_node, remove_stale
    from hpctrain.environment import JobEnvironment
    from hpctrain.train.config import check_data, load_config

    cfg = load_config(args.config, args.overrides)
    check_data(cfg)
    env = JobEnvironment.detect()
    dest = Path(args.dest).resolve()
    remove_stale(dest.parent, env.node_name, keep=dest)
    copy_for_node(cfg.data, args.dest, env.node_name, env.node_index, env.num_nodes or 1,
                  args.ranks_per_node, {"train": cfg.train_limit, "test": cfg.test_limit})
    return 0


def _request(args):
    from hpctrain.slurm.request import JobOptions, Request

    return Request(config=args.config, overrides=tuple(args.overrides), profile=args.profile,
                   job=JobOptions.taken_from(args),
                   job_name=args.job_name, run_dir=args.run_dir, venv=args.venv,
                   env_setup=tuple(args.env_setup or ()))


def _submit(args) -> int:
    from hpctrain.slurm.client import SlurmError
    from hpctrain.slurm.submit import Waiting, parse_chain, submit
    from hpctrain.slurm.sweep import sweep

    waiting = Waiting(args.wait, args.wait_timeout)
    try:
        if args.command == "sweep":
            return sweep(_request(args), args.param, backend=args.backend,
                         max_parallel=args.max_parallel, dry_run=args.dry_run,
                         waiting=waiting)
        return submit(_request(args), parse_chain(args.chain), stage_dataset=args.stage_dataset
                      or "", stage_source=args.stage_source or "", dry_run=args.dry_run,
                      waiting=waiting, stage_args=_stage_options(args))
    except SlurmError as e:
        print(f"hpctrain {args.command}: error: {e}", file=sys.stderr)
        return 1


def _stage_options(args) -> tuple[str, ...]:
    """--stage-options of an image tree, checked now by `hpctrain stage imagefolder`'s own
    parser (a typo fails here, not in the queued job)."""
    import shlex

    options = tuple(shlex.split(args.stage_options or ""))
    if options and args.stage_dataset != "imagefolder":
        raise InputError("--stage-options is for --stage-dataset imagefolder")
    if args.stage_dataset == "imagefolder":
        if any(o.split("=")[0] in ("--source", "--out") for o in options):
            raise InputError("--stage-options: --source is --stage-source, --out is the "
                             "config's data")
        build_parser().parse_args(["stage", "imagefolder", "--source", ".", "--out", ".",
                                   *options])
    return options


def _status(args) -> int:
    from hpctrain.resources import results_dir
    from hpctrain.slurm.client import SlurmError
    from hpctrain.slurm.status import status_table

    try:
        print(status_table(Path(args.results) if args.results else results_dir(), args.last),
              end="")
    except SlurmError as e:
        print(f"hpctrain status: error: {e}", file=sys.stderr)
        return 1
    return 0


def _interactive(args) -> int:
    from hpctrain.slurm.interactive import interactive
    from hpctrain.slurm.request import JobOptions

    return interactive(args.profile, JobOptions.taken_from(args),
                       config=args.config, run=args.run, command=args.run_command)


def _postmortem(args) -> int:
    from hpctrain.slurm.postmortem import record

    failure = record(Path(args.run_dir), args.exit_code, Path(args.log) if args.log else None)
    print(f"hpctrain: failure recorded in {args.run_dir}/report.json: {failure['summary']}",
          file=sys.stderr)
    return 0


def _train(args) -> int:
    from hpctrain.train.command import main

    return main(args.train_args)  # hpctrain.train parses its own options


def _report(args) -> int:
    from hpctrain.atomic import write_text
    from hpctrain.report.accuracy_table import accuracy_table
    from hpctrain.report.run_report import (
        check_failures,
        load_report,
        render_markdown,
        tensorboard_line,
    )

    missing = [d for d in args.run_dirs if not (Path(d) / "report.json").is_file()]
    if missing:
        print(f"hpctrain report: error: {missing[0]}/report.json not found", file=sys.stderr)
        return 1
    if args.out:
        from hpctrain.scaling.commands import aggregate

        return aggregate(args)
    reports = [load_report(d) for d in args.run_dirs]
    if args.table:
        base = Path(args.table).resolve().parent
        links = [os.path.relpath(Path(d).resolve() / "report.md", base) for d in args.run_dirs]
        text = accuracy_table(reports, links=links)
        write_text(args.table, text)
        print(text, end="")
        return 0
    if not (args.json or args.check):
        from hpctrain.report.commands import pictures_missing, redraw

        for d, report in zip(args.run_dirs, reports, strict=True):
            if pictures_missing(Path(d), report):
                drawn = redraw(Path(d), report)
                print(f"hpctrain report: {d}: pictures drawn again ("
                      f"{', '.join(drawn['files']) or 'none'})"
                      + (f"; {drawn['error']}" if drawn["error"] else ""), file=sys.stderr)
    for d, report in zip(args.run_dirs, reports, strict=True):
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(render_markdown(report, inline_pictures=False) if "model" in report
                  else json.dumps(report))
            board = tensorboard_line(d)
            if board:
                print(board)
    if args.check:
        bad = check_failures(args.run_dirs, reports)
        for line in bad:
            print(f"hpctrain report: check failed: {line}", file=sys.stderr)
        return 1 if bad else 0
    return 0


def _doctor(args) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from hpctrain import doctor

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    checks = doctor.diagnose(args.profile, args.config, args.here, installed)
    print("\n".join(c.line() for c in checks), flush=True)
    blockers = sum(c.ok is False for c in checks)
    if args.on_node and not args.here and not blockers:
        from hpctrain.slurm.profiles import load_profile

        res = doctor.on_node(load_profile(args.profile), [
            *(["--profile", args.profile] if args.profile else []),
            *(["--config", args.config] if args.config else [])])
        print("on a compute node:\n" + res.stdout.rstrip())
        if res.returncode != 0:
            blockers += max(1, sum(line.startswith("FAIL") for line in res.stdout.splitlines()))
            if "FAIL" not in res.stdout:
                print(f"FAIL node: srun failed: {' '.join(res.stderr.split())[-300:]}")
    if args.here:
        return 1 if blockers else 0
    print("doctor: a job would run" if not blockers else
          f"doctor: {blockers} blocker(s): fix the FAIL lines above")
    return 1 if blockers else 0


def _profile_init(args) -> int:
    from hpctrain.slurm import profile_init as pi
    from hpctrain.slurm.client import slurm_env

    env = slurm_env()
    sv = pi.survey(env)
    asked = {"account": args.account, "scratch": args.scratch,
             "env_setup": tuple(args.env_line) if args.env_line else None}
    if sys.stdin.isatty() and not args.yes:  # ask only what Slurm cannot tell
        if asked["account"] is None:
            asked["account"] = input(f"account to charge [{sv.default_account or 'none'}]: "
                                     ).strip() or None
        if asked["env_setup"] is None:
            print("shell lines that prepare a job (module load ..., source .../activate); "
                  "an empty line ends:")
            lines = iter(lambda: input("  > ").strip(), "")
            asked["env_setup"] = tuple(lines) or None
        if asked["scratch"] is None:
            asked["scratch"] = input("node-local scratch directory, e.g. $TMPDIR "
                                     f"[none{'; TmpFS ' + sv.tmpfs if sv.tmpfs else ''}]: "
                                     ).strip() or None
    answers = pi.Answers(partition=args.partition, constraint=args.constraint, **asked)
    flags = [f"--{k.replace('_', '-')}={v}" for k in ("partition", "constraint")
             if (v := getattr(args, k))]
    text = pi.render(args.name, pi.draft(args.name, sv, answers),
                     shlex.join(["hpctrain", "profile", "init", args.name, *flags]))
    profile, verdict = pi.check(args.name, text, args.config, env)
    if args.print:
        sys.stdout.write(text)
    else:
        path = pi.output_path(args.name, args.out)
        pi.write(path, text, args.force)
        print(f"wrote {path}")
    print(f"profile {profile.name}: checked; sbatch --test-only: {verdict}")
    print(f"next: hpctrain doctor --profile {args.out or args.name}")
    return 0


def _default_config() -> str | None:
    from hpctrain.resources import checkout_root

    root = checkout_root()
    path = root / "jobs" / "configs" / "fmnist_cnn.yaml" if root else None
    return str(path) if path and path.is_file() else None


def _config_options(p) -> None:
    p.add_argument("--config", required=True, help="experiment YAML, optionally FILE:variant")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _job_options(p) -> None:
    """Job settings: the cluster profile's values unless given here."""
    p.add_argument("--profile", help="cluster profile: a name (looked up in "
                   "$HPCTRAIN_PROFILES_DIR, ~/.config/hpctrain/clusters/, then the shipped "
                   "env/clusters/) or a path; default $HPCTRAIN_PROFILE, else embedded")
    p.add_argument("--nodes", type=int, help="nodes (default: the profile's)")
    p.add_argument("--ntasks-per-node", type=int, help="ranks per node (one per GPU)")
    p.add_argument("--cpus-per-task", type=int, help="CPUs per rank = its intra-op threads")
    p.add_argument("--gpus-per-node", type=int, help="GPUs per node (--gres)")
    p.add_argument("--time", help="Slurm time limit, e.g. 00:30:00")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--constraint")
    p.add_argument("--launcher", choices=LAUNCHERS, help="how the job starts its ranks "
                   "(default: the profile's, srun)")
    p.add_argument("--signal-seconds", type=int, help="USR1 this many s before the time "
                   "limit: checkpoint and requeue (0: off)")
    p.add_argument("--max-restarts", type=int, help="requeues before giving up")


def _submit_options(p) -> None:
    p.add_argument("--job-name")
    p.add_argument("--venv", help="virtualenv the job activates (default: this one), unless "
                   "the profile has env_setup")
    p.add_argument("--env-setup", action="append", metavar="LINE",
                   help="shell line replacing the profile's env_setup (repeatable), e.g. "
                        "'module load tensorflow/2.21'")
    p.add_argument("--dry-run", action="store_true",
                   help="print the script and run sbatch --test-only; queue nothing")
    p.add_argument("--wait", action="store_true", help="wait for the job, print its report")
    p.add_argument("--wait-timeout", type=float, default=3600.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hpctrain", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="HPC batch training on Slurm: stage data into HDF5, submit "
        "Horovod-distributed Keras training, read the timing and accuracy reports.",
        epilog=WORKFLOW)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("cluster", help="the embedded Slurm test cluster on this host",
                       epilog="example: hpctrain cluster up && hpctrain cluster status")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--dir", help="state directory (default .cluster/ of the checkout, or "
                   "$HPCTRAIN_CLUSTER_DIR)")
    c.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for idle nodes")
    c.set_defaults(func=_cluster)

    d = sub.add_parser(
        "doctor", help="check that jobs can run here: a checklist with the fix for each failure",
        description="Check everything a job needs, on this login node and (--on-node) on a "
        "compute node\nthrough srun: one line per check, with the fix for each failure. Exit 0 "
        "when a job\nwould run, 1 when not.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hpctrain doctor --profile mysite --config jobs/configs/"
        "fmnist_cnn.yaml --on-node")
    d.add_argument("--profile", help="cluster profile (default $HPCTRAIN_PROFILE, else "
                   "embedded)")
    d.add_argument("--config", help="an experiment config: its data is checked too")
    d.add_argument("--on-node", action="store_true", help="also run the node checks (GPUs, "
                   "scratch) on a compute node of the profile's partition, through srun")
    d.add_argument("--here", action="store_true", help="run only the node checks, on this "
                   "host (what --on-node runs on the node)")
    d.set_defaults(func=_doctor)

    pr = sub.add_parser("profile", help="cluster profiles: `profile init NAME` writes one "
                        "from the live cluster")
    pra = pr.add_subparsers(dest="action", required=True, metavar="ACTION")
    pi = pra.add_parser(
        "init", help="write a cluster profile from what Slurm reports",
        description="Write a cluster profile from the live cluster: partitions (MaxTime, "
        "nodes),\nCPUs, memory, GPUs and their gres type, node features, srun's PMIx, your "
        "default\naccount and TmpFS. Asks (or takes flags) only for what Slurm cannot tell; "
        "values\nchosen for you are marked `# guess:`. Checked as any profile and with "
        "sbatch --test-only.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hpctrain profile init mysite --partition gpu --account proj42 "
        "--env-line 'module load cuda openmpi' --scratch '$TMPDIR'")
    pi.add_argument("name", help="the profile's name (its file: NAME.yaml)")
    pi.add_argument("--partition", help="default: Slurm's default partition")
    pi.add_argument("--account", help="account to charge (default: yours in Slurm's "
                    "accounting, if any)")
    pi.add_argument("--constraint", help="a node feature: only nodes with it are described")
    pi.add_argument("--env-line", action="append", metavar="LINE", help="shell line that "
                    "prepares a job (repeatable), e.g. 'module load cuda/12.3'")
    pi.add_argument("--scratch", help="node-local directory the data is copied to, e.g. "
                    "'$TMPDIR'")
    pi.add_argument("--config", help="an experiment config whose job script sbatch "
                    "--test-only checks (default: the workshop CNN's)",
                    default=_default_config())
    pi.add_argument("--out", help="where to write it (default: the first profile directory: "
                    "$HPCTRAIN_PROFILES_DIR, else ~/.config/hpctrain/clusters/)")
    pi.add_argument("--force", action="store_true", help="replace an existing profile")
    pi.add_argument("--print", action="store_true", help="print it instead of writing it")
    pi.add_argument("--yes", action="store_true", help="ask nothing (also when stdin is not "
                    "a terminal)")
    pi.set_defaults(func=_profile_init)

    s = sub.add_parser("stage", help="stage data into HDF5: MNIST-format files or an "
                       "ImageNet-layout image tree",
                       description="Stage a data set into HDF5 once; every rank then reads "
                       "its share fast. `hpctrain stage KIND --help` for each kind.")
    kinds = s.add_subparsers(dest="dataset", required=True, metavar="KIND")
    for name in ("fashion-mnist", "mnist"):
        m = kinds.add_parser(name, help=f"{name} IDX files or a Keras .npz -> one HDF5 file",
                             epilog="example: hpctrain stage fashion-mnist --source "
                             "/usr/share/datasets/fashion-mnist --out data/fashion-mnist.h5")
        m.add_argument("--source", required=True, help="directory of IDX files or a .npz")
        m.add_argument("--out", required=True, help="HDF5 file to write")
        m.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                       help="HDF5 filter (default none: read without Python's GIL, see "
                       "results/benchmarks/README.md, input pipeline; lzf: smaller, slower "
                       "to read)")
        m.set_defaults(func=_stage)
    f = kinds.add_parser(
        "imagefolder", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="an ImageNet-layout tree (train/<class>/*.JPEG, val/<class>/...) -> HDF5 shards",
        description="Decode and resize every image of an ImageNet-layout tree to SIZE x SIZE "
        "RGB and write\nHDF5 shards per split plus manifest.json into OUT. Each shard is "
        "written under a temporary\nname and renamed; rerunning the same command after a "
        "kill skips the complete shards.\nUnder srun/mpirun, every rank stages its own "
        "shards (rank 0 walks the tree once).",
        epilog="examples:\n"
        "  hpctrain stage imagefolder --source data/fmnist-tree --out data/fmnist-32 --size 32\n"
        "  srun --mpi=pmix -n 8 -c 4 hpctrain stage imagefolder --source /data/imagenet \\\n"
        "      --out /scratch/$USER/imagenet-256 --size 256 --shards 1024\n"
        "      (8 ranks, each writes its own shards with 4 worker processes)")
    f.add_argument("--source", required=True, help="the tree: train/<class>/* and val/<class>/*"
                   " (or test/<class>/*)")
    f.add_argument("--out", required=True, help="directory for the shards and manifest.json")
    f.add_argument("--size", type=int, required=True, help="staged images are SIZE x SIZE x 3")
    f.add_argument("--shards", type=int, default=0, help="training shards (the evaluation "
                   "split gets a proportional number); default: ~1 GiB each, at least 8")
    f.add_argument("--resize", choices=["center-crop", "stretch"], default="center-crop",
                   help="center-crop: shorter side to SIZE, then the central square "
                   "(default); stretch: the whole image to SIZE x SIZE")
    f.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                   help="HDF5 filter (default none: fastest to read; see "
                   "results/benchmarks/README.md, input pipeline)")
    f.add_argument("--workers", type=int, default=0, help="local worker processes per rank "
                   "(default: Slurm's --cpus-per-task, else the CPUs available)")
    f.add_argument("--max-unreadable", type=float, default=0.001, metavar="FRACTION",
                   help="fail if more than this fraction of images cannot be decoded "
                   "(default 0.001); they are skipped and listed either way")
    f.add_argument("--seed", type=int, default=0, help="seed of the order images are "
                   "spread over shards")
    f.set_defaults(func=_stage_imagefolder)
    lc = kinds.add_parser(
        "local-copy", help="(job scripts) copy what this node's ranks read to node-local disk",
        description="Run once per node inside a job (srun --ntasks-per-node=1): copies the "
        "shards this node's ranks read (or the whole HDF5 file) into DEST/<node>/, verifying "
        "each shard's sha256; train with data=DEST/{node}/<name>.",
        epilog="example: srun --ntasks-per-node=1 hpctrain stage local-copy --config C "
        "--dest \"$TMPDIR/hpctrain-$SLURM_JOB_ID\" --ranks-per-node 4")
    _config_options(lc)
    lc.add_argument("--dest", required=True, help="node-local directory (the profile's scratch)")
    lc.add_argument("--ranks-per-node", type=int, required=True,
                    help="training ranks per node (the job's --ntasks-per-node)")
    lc.set_defaults(func=_stage_local_copy)

    t = sub.add_parser("train", add_help=False, prefix_chars="\0",
                       help="train one config (one rank, or under a launcher); --help for more")
    t.add_argument("train_args", nargs=argparse.REMAINDER)
    t.set_defaults(func=_train)

    b = sub.add_parser("submit", help="render job.sbatch into a run directory and sbatch it",
                       description="Check the request against the cluster profile, render "
                       "results/<experiment>/<run-id>/job.sbatch, sbatch it; with --wait, "
                       "wait and print the report. Flags override the profile's job "
                       "defaults; key=value overrides the experiment config.",
                       epilog="example: hpctrain submit --config "
                       "jobs/configs/fmnist_cnn.yaml:short --nodes 2 --wait epochs=2")
    _config_options(b)
    _job_options(b)
    b.add_argument("--chain", metavar="STEPS", help="stage,train,report (or a part with "
                   "train): one job per step, each --dependency=afterok on the one before")
    b.add_argument("--stage-source", help="--chain stage: directory of IDX files or a .npz, "
                   "or an image tree (train/<class>/*, val/<class>/*)")
    b.add_argument("--stage-dataset", choices=["mnist", "fashion-mnist", "imagefolder"])
    b.add_argument("--stage-options", metavar="'--size S ...'", help="--stage-dataset "
                   "imagefolder: options of `hpctrain stage imagefolder`, e.g. '--size 32 "
                   "--shards 8' (the job stages with one rank per node)")
    b.add_argument("--run-dir", help="default results/<experiment>/<run-id>")
    _submit_options(b)
    b.set_defaults(func=_submit)

    w = sub.add_parser("sweep", help="one job-array task per point of a parameter grid",
                       epilog="example: hpctrain sweep --config jobs/configs/fmnist_cnn.yaml"
                       ":short --param batch_size=64,128 --param learning_rate=0.001,0.003")
    _config_options(w)
    _job_options(w)
    w.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis (repeatable); tasks are the cross product")
    w.add_argument("--backend", choices=["array", "submitit"], default="array")
    w.add_argument("--max-parallel", type=int, help="at most N tasks at once (--array %%N)")
    w.add_argument("--run-dir", help="sweep directory (default results/<experiment>-sweep/<id>)")
    _submit_options(w)
    w.set_defaults(func=_submit)

    st = sub.add_parser("status", help="this project's runs and their Slurm jobs (sacct)")
    st.add_argument("--results", help="results directory to scan (default ./results)")
    st.add_argument("--last", type=int, default=50, help="newest N submissions")
    st.set_defaults(func=_status)

    i = sub.add_parser("interactive", help="print (or --run) the salloc / srun --pty lines",
                       epilog="example: hpctrain interactive --nodes 2 --run -- hostname")
    i.add_argument("--config", help="experiment config to show in the printed commands")
    _job_options(i)
    i.add_argument("--run", action="store_true", help="run salloc with COMMAND (default a "
                   "shell via srun --pty)")
    i.add_argument("run_command", nargs=argparse.REMAINDER, metavar="command",
                   help="-- command to run in salloc")
    i.set_defaults(func=_interactive)

    pm = sub.add_parser("postmortem", help="(job scripts) record which rank failed and why")
    pm.add_argument("--run-dir", required=True)
    pm.add_argument("--exit-code", type=int, required=True)
    pm.add_argument("--log", help="the job's log (srun/mpirun error lines)")
    pm.set_defaults(func=_postmortem)

    r = sub.add_parser("report", help="print run reports, or an accuracy table of several",
                       epilog="example: hpctrain report results/fmnist_cnn/*")
    r.add_argument("run_dirs", nargs="+", metavar="run_dir")
    r.add_argument("--json", action="store_true", help="print report.json")
    r.add_argument("--check", action="store_true", help="exit 1 unless every run completed "
                   "and met its expected accuracy (the report step of a chain)")
    r.add_argument("--table", metavar="FILE.md",
                   help="write one accuracy table of all the runs (and print it)")
    r.add_argument("--out", metavar="DIR", help="write the scaling tables and plots of "
                   "these runs (runs.csv, summary.csv, README.md, PNGs) into DIR, as "
                   "`hpctrain study` does")
    r.add_argument("--title", help="--out: the README's title (default: the experiment)")
    r.add_argument("--note", help="--out: a paragraph on what the numbers mean")
    r.set_defaults(func=_report)

    from hpctrain.report import commands as report_commands
    from hpctrain.scaling.commands import add_commands

    add_commands(sub, _config_options)
    report_commands.add_commands(sub)
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


if __name__ == "__main__":
    run()
