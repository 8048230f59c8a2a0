"""The scaling commands of `hpctrain`: `study`, `project`, and `report RUN_DIR... --out DIR`
(cli.py builds the rest of the parser and calls `add_commands`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hpctrain.validation import InputError


def study(args) -> int:
    from hpctrain.scaling.study import Study, parse_nodes, run_study
    from hpctrain.slurm.client import SlurmError
    from hpctrain.slurm.request import JobOptions, Request

    job = JobOptions(ntasks_per_node=args.tasks_per_node, cpus_per_task=args.cpus_per_task,
                     gpus_per_node=args.gpus_per_node, time=args.time,
                     partition=args.partition, account=args.account, qos=args.qos,
                     constraint=args.constraint)
    req = Request(config=args.config, overrides=tuple(args.overrides), profile=args.profile,
                  job=job, venv=args.venv)
    name = args.name or Path(args.config.split(":")[0]).stem + "-" + args.mode
    study = Study(req, parse_nodes(args.nodes), args.tasks_per_node, args.mode, args.repeats,
                  name, parallel=args.parallel,
                  global_batches=parse_nodes(args.global_batches, "--global-batches")
                  if args.global_batches else ())
    try:
        return run_study(study, dry_run=args.dry_run, wait=not args.no_wait,
                         timeout=args.wait_timeout)
    except SlurmError as e:
        print(f"hpctrain study: error: {e}", file=sys.stderr)
        return 1


def aggregate(args) -> int:
    from hpctrain.scaling.study_report import load_runs, write_study
    from hpctrain.slurm.client import SlurmClient, SlurmError

    run_dirs = [Path(d) for d in args.run_dirs]
    job_ids = [str(json.loads((d / "report.json").read_text())["slurm"]["job_id"])
               for d in run_dirs]
    try:
        jobs = SlurmClient().job_times([j for j in job_ids if j not in ("", "None")])
    except (SlurmError, OSError):
        jobs = {}  # no Slurm here: the tables go without the job overheads
    runs = load_runs(run_dirs, jobs)
    if runs.empty:
        print("hpctrain report: error: no run with a training report", file=sys.stderr)
        return 1
    out = Path(args.out)
    command = "hpctrain report " + " ".join(args.run_dirs) + f" --out {args.out}"
    summary = write_study(out, runs, title=args.title or runs["experiment"].iloc[0],
                          command=command, note=args.note or "")
    print(f"{summary['runs']} run(s), {summary['points']} point(s), {summary['mode']} "
          f"scaling -> {out / 'README.md'}, runs.csv, summary.csv, "
          + ", ".join(f"{p}.png" for p in summary["pictures"]))
    return 0


def project(args) -> int:
    from hpctrain.atomic import write_json, write_text
    from hpctrain.scaling import costmodel, projection, published

    overhead, overlap = published.calibrate()
    overhead = overhead if args.overhead is None else costmodel.parse_seconds(args.overhead)
    overlap = overlap if args.overlap is None else args.overlap
    if not 0 <= overlap <= 1:
        raise InputError(f"--overlap {overlap}: a fraction in [0, 1]")
    command = "hpctrain project " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["project"] \
        else "hpctrain project ..."
    if args.published:
        rows = published.check(overhead, overlap)
        text = published.render(rows, overhead, overlap, command)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            write_text(out / "README.md", text)
            write_json(out / "published.json", {"overhead_s": overhead, "overlap": overlap,
                                                "rows": rows})
        print(text, end="")
        return 0
    try:
        net = costmodel.Network(
            costmodel.parse_bandwidth(args.network), costmodel.parse_seconds(args.latency),
            costmodel.parse_bandwidth(args.intra_bandwidth),
            costmodel.parse_seconds(args.intra_latency))
        gpus = [int(g) for g in args.gpus.split(",")]
    except ValueError as e:
        raise InputError(str(e)) from None
    if args.study:
        cal = projection.from_study(Path(args.study))
    elif args.model and args.throughput and args.batch:
        cal = projection.from_throughput(args.model, args.throughput, args.batch,
                                         args.gradient_bytes)
    else:
        raise InputError("give --study DIR, or --model, --throughput and --batch "
                         "(or --published)")
    opt = costmodel.Options(overlap=overlap, fusion_bytes=args.fusion_mb * 2**20,
                            cycle_s=args.cycle_ms / 1e3, overhead_s=overhead)
    rows = projection.projection_table(cal, gpus, args.gpus_per_node, net, opt)
    text = "\n".join([
        f"# Projection: {cal.source}", "",
        f"Network {args.network} between nodes ({args.latency} per message), "
        f"{args.intra_bandwidth} within a node; {args.gpus_per_node} GPUs (ranks) per node; "
        f"overlap {overlap:.2f}, per-step overhead {1e3 * overhead:.1f} ms (calibrated on "
        "published figures unless given: `hpctrain project --published`).", "",
        projection.render_table(rows), "",
        "Reproduce with:", "", "```", command, "```", ""])
    if args.out:
        write_text(Path(args.out), text)
    print(text, end="")
    return 0


def add_commands(sub, config_options) -> None:
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
        "  hpctrain study ... --dry-run     (print the job scripts; queue nothing)")
    config_options(y)
    y.add_argument("--nodes", required=True, help="node counts, e.g. 1,2,4")
    y.add_argument("--tasks-per-node", type=int, default=1, help="ranks per node (default 1)")
    y.add_argument("--mode", choices=["strong", "weak", "batch"], default="strong",
                   help="strong: the global batch of the smallest point everywhere "
                   "(default); weak: the per-rank batch everywhere; batch: accuracy vs "
                   "--global-batches on one node count (gradient accumulation, with and "
                   "without warm-up)")
    y.add_argument("--global-batches", help="--mode batch: e.g. 128,512,2048,4096")
    y.add_argument("--repeats", type=int, default=1, help="runs per point (an interval "
                   "over repeats needs >= 2)")
    y.add_argument("--name", help="study directory results/studies/NAME (default "
                   "<config>-<mode>)")
    y.add_argument("--parallel", action="store_true", help="let the points' jobs overlap "
                   "(default: one after another, so they never share nodes)")
    y.add_argument("--profile", help="cluster profile (as for submit)")
    y.add_argument("--cpus-per-task", type=int, help="CPUs per rank = its threads")
    y.add_argument("--gpus-per-node", type=int)
    y.add_argument("--time", help="time limit of each job")
    y.add_argument("--partition")
    y.add_argument("--account")
    y.add_argument("--qos")
    y.add_argument("--constraint")
    y.add_argument("--venv", help="virtualenv the jobs activate (default: this one)")
    y.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    y.add_argument("--no-wait", action="store_true", help="submit and return; run the same "
                   "command again later to collect")
    y.add_argument("--wait-timeout", type=float, default=6 * 3600.0)
    y.set_defaults(func=study)

    pj = sub.add_parser(
        "project", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="project a study (or a GPU's throughput) to larger clusters: a ring-allreduce "
        "cost model",
        description="Predict step time, images/s and scaling efficiency at N GPUs: compute "
        "per step\n(from the study's smallest point, or a GPU's throughput at its batch) + "
        "the ring\nallreduce of the model's gradients not hidden behind the backward pass + "
        "a per-step\noverhead. --published checks the model against published figures.",
        epilog="examples:\n"
        "  hpctrain project --study results/studies/synthetic_resnet20-weak --gpus 2,8,64 "
        "--network 25Gb/s\n"
        "  hpctrain project --model resnet50 --throughput 1270 --batch 256 --gpus 8,64,512 "
        "\\\n      --network 100Gb/s --gpus-per-node 8 --intra-bandwidth 130GB/s\n"
        "  hpctrain project --published --out results/projection")
    pj.add_argument("--study", help="a study directory (results/studies/NAME)")
    pj.add_argument("--model", help="a model in the layer profiles (resnet50, resnet101, "
                    "inception_v3, vgg16, or a zoo model)")
    pj.add_argument("--throughput", type=float, help="images/s of one GPU at --batch")
    pj.add_argument("--batch", type=int, help="per-GPU batch of --throughput")
    pj.add_argument("--gradient-bytes", type=float, help="override the model's gradient bytes")
    pj.add_argument("--gpus", default="1,8,64,512", help="rank counts (default 1,8,64,512)")
    pj.add_argument("--gpus-per-node", type=int, default=4)
    pj.add_argument("--network", default="25Gb/s", help="per-node network, e.g. 25Gb/s or "
                    "12.5GB/s (default 25Gb/s)")
    pj.add_argument("--latency", default="10us", help="per-message latency across nodes")
    pj.add_argument("--intra-bandwidth", default="100GB/s", help="within a node (NVLink "
                    "~100-230GB/s, PCIe ~10GB/s)")
    pj.add_argument("--intra-latency", default="3us")
    pj.add_argument("--overlap", type=float, help="0..1 (default: calibrated)")
    pj.add_argument("--overhead", help="per-step overhead, e.g. 10ms (default: calibrated)")
    pj.add_argument("--fusion-mb", type=float, default=64.0, help="HOROVOD_FUSION_THRESHOLD")
    pj.add_argument("--cycle-ms", type=float, default=1.0, help="HOROVOD_CYCLE_TIME")
    pj.add_argument("--published", action="store_true",
                    help="check the model against the published figures")
    pj.add_argument("--out", help="write the result (a directory with --published, else "
                    "a markdown file)")
    pj.set_defaults(func=project)
