"""The commands that run training or send it to Slurm: `train`, `submit`, `sweep`, `study`,
`status`, `interactive`, and `postmortem` (job scripts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpctrain.cli.options import config_options, job_options, submit_options
from hpctrain.validation import InputError


def _request(args):
    from hpctrain.slurm.job_options import JobOptions
    from hpctrain.slurm.request import Request

    return Request(config=args.config, overrides=tuple(args.overrides), profile=args.profile,
                   job=JobOptions.taken_from(args),
                   job_name=args.job_name, run_dir=args.run_dir, venv=args.venv,
                   env_setup=tuple(args.env_setup or ()))


def _submit(args) -> int:
    from hpctrain.slurm.client import SlurmClient, SlurmError
    from hpctrain.slurm.queue import parse_chain
    from hpctrain.slurm.submit import DryRun, submit
    from hpctrain.slurm.sweep import sweep

    client = SlurmClient()
    try:
        if args.command == "sweep":
            swept = sweep(_request(args), args.param, backend=args.backend,
                          max_parallel=args.max_parallel, dry_run=args.dry_run, client=client,
                          run_task=sweep_task)
            if isinstance(swept, DryRun):
                return _print_dry_run(swept)
            print(f"submitted sweep job {swept.job_id} with {len(swept.tasks)} tasks; sweep "
                  f"dir {swept.sweep_dir}", flush=True)
            return _wait_sweep(client, swept, args.wait_timeout) if args.wait else 0
        queued = submit(_request(args), parse_chain(args.chain),
                        stage_dataset=args.stage_dataset or "",
                        stage_source=args.stage_source or "", dry_run=args.dry_run,
                        client=client, stage_args=_stage_options(args))
        if isinstance(queued, DryRun):
            return _print_dry_run(queued)
        chain = "" if len(queued.jobs) < 2 else " (chain " + " -> ".join(
            f"{step} {job}" for step, job in queued.jobs) + ", afterok)"
        print(f"submitted job {queued.job_id}; run dir {queued.run_dir}{chain}", flush=True)
        return _wait_job(client, queued, args.wait_timeout) if args.wait else 0
    except SlurmError as e:
        print(f"hpctrain {args.command}: error: {e}", file=sys.stderr)
        return 1


def _say(line: str) -> None:
    print(line, flush=True)


def _print_dry_run(dry) -> int:
    """The scripts a dry run would queue on stdout, Slurm's verdict on each on stderr."""
    for step, script, verdict in dry.scripts:
        sys.stdout.write(script)
        print(f"# {step}: sbatch --test-only: {verdict}", file=sys.stderr)
    return 0


def _wait_job(client, queued, timeout: float) -> int:
    """--wait: the chain's last job followed to its end, then the run's report printed; 0
    only when the job and the run completed."""
    from hpctrain.report.run_report import (
        job_outcome,
        load_report,
        render_markdown,
        tensorboard_line,
    )
    from hpctrain.slurm.client import print_change

    state = client.wait(queued.last_job_id, timeout=timeout, on_change=print_change)
    if queued.last_job_id != queued.job_id:
        state = client.state(queued.job_id) or state
    run_dir = queued.run_dir
    if not (run_dir / "report.json").exists():
        log = next(iter(sorted(run_dir.glob("slurm-*.out"))), None)
        print(f"job {queued.job_id} ended {state} without a report", file=sys.stderr)
        if log:
            tail = log.read_text(errors="replace").splitlines()[-30:]
            print(f"--- last lines of {log} ---", *tail, sep="\n", file=sys.stderr)
        return 1
    report = load_report(run_dir)
    print((render_markdown(report, inline_pictures=False) if "model" in report
           else (run_dir / "report.md").read_text()).rstrip("\n"))
    print(f"report: {run_dir / 'report.json'}")
    board = tensorboard_line(run_dir)
    if board:
        print(board)
    ok, line = job_outcome(run_dir, state)
    print(line)
    return 0 if ok else 1


def _wait_sweep(client, swept, timeout: float) -> int:
    """--wait on a sweep: each task followed to its end, one line each."""
    from hpctrain.report.run_report import job_outcome
    from hpctrain.slurm.queue import wait_each

    def judge(i: int, job_id: str, state: str) -> bool:
        run_dir = swept.sweep_dir / f"task-{i}"
        ok, line = job_outcome(run_dir, state)
        print(f"task {i} ({' '.join(swept.tasks[i])}): {line}, {run_dir}")
        return ok

    return 1 if wait_each(client, swept.task_jobs(), timeout, judge) else 0


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
        from hpctrain.cli import build_parser

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
    from hpctrain.slurm.interactive import lines, run_allocation
    from hpctrain.slurm.job_options import JobOptions

    salloc, text = lines(args.profile, JobOptions.taken_from(args), args.config)
    if not args.run:
        print(text, end="")
        return 0
    return run_allocation(salloc, args.run_command, log=_say)


def _postmortem(args) -> int:
    from hpctrain.slurm.postmortem import record

    failure = record(Path(args.run_dir), args.exit_code, Path(args.log) if args.log else None)
    print(f"hpctrain: failure recorded in {args.run_dir}/report.json: {failure['summary']}",
          file=sys.stderr)
    return 0


def _train(args) -> int:
    return _hpctrain_train(args.train_args)  # it parses its own options


def _hpctrain_train(argv: list[str]) -> int:
    """`hpctrain train ARGV` in this process, its report written by report/'s RunReporter."""
    from hpctrain.report.run_report import RunReporter
    from hpctrain.train.command import main

    return main(argv, RunReporter())


def sweep_task(config: str, run_dir: str, overrides: list[str]) -> dict:
    """One sweep task under submitit: `hpctrain train` in every srun task of the job."""
    code = _hpctrain_train(["--config", config, "--run-dir", run_dir, "--resume", *overrides])
    if code != 0:
        raise RuntimeError(f"hpctrain train exited with {code} (see {run_dir})")
    return {"run_dir": run_dir}


def _study(args) -> int:
    from hpctrain.scaling.plan import parse_nodes
    from hpctrain.scaling.study import Study, run_study
    from hpctrain.slurm.client import SlurmError
    from hpctrain.slurm.job_options import JobOptions
    from hpctrain.slurm.profiles import load_profile
    from hpctrain.slurm.request import Request
    from hpctrain.slurm.submit import DryRun

    job = JobOptions.taken_from(args, exclude=("nodes",))  # --nodes: the study's node counts
    req = Request(config=args.config, overrides=tuple(args.overrides), profile=args.profile,
                  job=job, venv=args.venv)
    name = args.name or Path(args.config.split(":")[0]).stem + "-" + args.mode
    tasks = job.settings(load_profile(args.profile))["ntasks_per_node"]
    study = Study(req, parse_nodes(args.nodes), tasks, args.mode, args.repeats,
                  name, parallel=args.parallel,
                  global_batches=parse_nodes(args.global_batches, "--global-batches")
                  if args.global_batches else (),
                  within_node=parse_nodes(args.within_node, "--within-node")
                  if args.within_node else (),
                  variants=tuple(v.strip() for v in args.variants.split(",") if v.strip())
                  if args.variants else (), base_alone=args.base_alone)
    try:
        outcome = run_study(study, dry_run=args.dry_run, wait=not args.no_wait,
                            timeout=args.wait_timeout, log=_say,
                            report_only=args.report_only)
        return _print_dry_run(outcome) if isinstance(outcome, DryRun) else outcome
    except SlurmError as e:
        print(f"hpctrain study: error: {e}", file=sys.stderr)
        return 1


def add(sub) -> None:
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
    config_options(b)
    job_options(b)
    b.add_argument("--chain", metavar="STEPS", help="stage,train,report (or a part with "
                   "train): one job per step, each --dependency=afterok on the one before")
    b.add_argument("--stage-source", help="--chain stage: directory of IDX files or a .npz, "
                   "or an image tree (train/<class>/*, val/<class>/*)")
    b.add_argument("--stage-dataset", choices=["mnist", "fashion-mnist", "imagefolder"])
    b.add_argument("--stage-options", metavar="'--size S ...'", help="--stage-dataset "
                   "imagefolder: options of `hpctrain stage imagefolder`, e.g. '--size 32 "
                   "--shards 8' (the job stages with one rank per node)")
    b.add_argument("--run-dir", help="default results/<experiment>/<run-id>")
    submit_options(b)
    b.set_defaults(func=_submit)

    w = sub.add_parser("sweep", help="one job-array task per point of a parameter grid",
                       epilog="example: hpctrain sweep --config jobs/configs/fmnist_cnn.yaml"
                       ":short --param batch_size=64,128 --param learning_rate=0.001,0.003")
    config_options(w)
    job_options(w)
    w.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis (repeatable); tasks are the cross product")
    w.add_argument("--backend", choices=["array", "submitit"], default="array")
    w.add_argument("--max-parallel", type=int, help="at most N tasks at once (--array %%N)")
    w.add_argument("--run-dir", help="sweep directory (default results/<experiment>-sweep/<id>)")
    submit_options(w)
    w.set_defaults(func=_submit)

    st = sub.add_parser("status", help="this project's runs and their Slurm jobs (sacct)")
    st.add_argument("--results", help="results directory to scan (default ./results)")
    st.add_argument("--last", type=int, default=50, help="newest N submissions")
    st.set_defaults(func=_status)

    i = sub.add_parser("interactive", help="print (or --run) the salloc / srun --pty lines",
                       epilog="example: hpctrain interactive --nodes 2 --run -- hostname")
    i.add_argument("--config", help="experiment config to show in the printed commands")
    job_options(i)
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

    y = sub.add_parser(
        "study", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="scaling study: one job per node count, then tables, plots, node-hours",
        description="Train one config at several node counts (one Slurm job per point and "
        "repeat, one\nafter another), wait, and write results/studies/NAME/: runs.csv, "
        "summary.csv,\nREADME.md (speedup, efficiency, node-hours, where the time goes) and "
        "PNG plots.\nRun the same command again to resume: completed runs are kept.",
        epilog="examples:\n"
        "  hpctrain study --config jobs/configs/fmnist_cnn.yaml:study --nodes 1,2,4 "
        "--mode strong\n"
        "  hpctrain study --config jobs/configs/synthetic_resnet20.yaml:study --nodes 1,2,4 "
        "--mode weak --repeats 3\n"
        "  hpctrain study --config jobs/configs/fmnist_cnn_large_batch.yaml --nodes 2 "
        "--mode batch \\\n      --global-batches 128,512,2048,4096   (accuracy at scale)\n"
        "  hpctrain study --config jobs/configs/fmnist_cnn_large_batch.yaml --nodes 1,2 "
        "--mode batch \\\n      --global-batches 256,1024,4096   (a nodes x global-batch "
        "grid)\n"
        "  hpctrain study --config jobs/configs/tree48_resnet20_recipe.yaml --nodes 2 --mode "
        "variants \\\n      --variants base,no_weight_decay --repeats 2   (an ablation)\n"
        "  hpctrain study --config jobs/configs/tree28_resnet20_large_batch.yaml --nodes 2 "
        "--mode batch \\\n      --variants sgd,lars,lamb --global-batches 64,1024,2048 --repeats 2"
        "   (methods)\n"
        "  hpctrain study ... --dry-run     (print the job scripts; queue nothing)")
    config_options(y)
    y.add_argument("--nodes", required=True, help="node counts, e.g. 1,2,4")
    y.add_argument("--mode", choices=["strong", "weak", "batch", "variants"],
                   default="strong",
                   help="strong: the global batch of the smallest point everywhere "
                   "(default); weak: the per-rank batch everywhere; batch: accuracy vs "
                   "--global-batches (gradient accumulation, with and without warm-up; "
                   "with --variants, each method with its own) on each node count: several "
                   "make a nodes x global-batch grid; variants: "
                   "--variants of the config file on one node count, --repeats seeds each, "
                   "against the first")
    y.add_argument("--global-batches", help="--mode batch: e.g. 128,512,2048,4096")
    y.add_argument("--variants", help="--mode variants: the config file's variants to train, "
                   "the first the reference (base: the file's own keys), e.g. "
                   "base,no_weight_decay,no_label_smoothing; --mode batch: methods, each at "
                   "every global batch against the first at the smallest, e.g. sgd,lars,lamb")
    y.add_argument("--base-alone", action="store_true", help="--mode batch --variants: the "
                   "first method only at the smallest global batch (the base), the others "
                   "only above it (a rate sweep at large batch against one base)")
    y.add_argument("--within-node", help="rank counts on one node before the nodes, e.g. "
                   "1,2,4 with --ntasks-per-node 8 --nodes 1,2,4: 1, 2, 4, 8 ranks on one "
                   "node, then 16 and 32 on 2 and 4 nodes, one base for all")
    y.add_argument("--repeats", type=int, default=1, help="runs per point (an interval "
                   "over repeats needs >= 2); raising it on a study whose report was read "
                   "is another look at its verdicts, and their intervals widen for it")
    y.add_argument("--name", help="study directory results/studies/NAME (default "
                   "<config>-<mode>)")
    y.add_argument("--parallel", action="store_true", help="let the points' jobs overlap "
                   "(default: one after another, so they never share nodes)")
    job_options(y, exclude=("nodes",))
    y.add_argument("--tasks-per-node", type=int, dest="ntasks_per_node",
                   help=argparse.SUPPRESS)  # the name studies had before --ntasks-per-node
    y.add_argument("--venv", help="virtualenv the jobs activate (default: this one)")
    y.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    y.add_argument("--no-wait", action="store_true", help="submit and return; run the same "
                   "command again later to collect")
    y.add_argument("--report-only", action="store_true", help="write the study's tables, "
                   "plots and README from its run directories as they are (a cancelled or "
                   "failed point listed as such); submit nothing")
    y.add_argument("--wait-timeout", type=float, default=6 * 3600.0)
    y.set_defaults(func=_study)
