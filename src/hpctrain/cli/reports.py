"""The commands that read what runs wrote: `report` (one run, a table, or the scaling tables
of several), `project` (a study or a GPU's throughput on larger clusters), `predict` and
`noise-scale` (how large a global batch a run's gradients can use)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from hpctrain.environment import JobEnvironment
from hpctrain.validation import InputError


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
        return _aggregate(args)
    reports = [load_report(d) for d in args.run_dirs]
    if args.table:
        base = Path(args.table).resolve().parent
        links = [os.path.relpath(Path(d).resolve() / "report.md", base) for d in args.run_dirs]
        studies = [(os.path.relpath(readme, base), readme.read_text().split("\n", 1)[0]
                    .lstrip("# ").strip()) for readme in sorted(base.glob("studies/*/README.md"))]
        text = accuracy_table(reports, links=links, studies=studies)
        write_text(args.table, text)
        print(text, end="")
        return 0
    if not (args.json or args.check):
        from hpctrain.report.redraw import pictures_missing, redraw

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


def _aggregate(args) -> int:
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


def _project(args) -> int:
    from hpctrain.atomic import write_json, write_text
    from hpctrain.scaling import costmodel, network, projection, published

    command = "hpctrain project " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["project"] \
        else "hpctrain project ..."
    if args.published:
        fitted = published.calibrate()
        rows = published.check(fitted)
        text = published.render(rows, fitted, command)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            write_text(out / "README.md", text)
            write_json(out / "published.json", {"constants": fitted.as_dict(), "rows": rows})
            write_json(published.CALIBRATED, fitted.as_dict())  # what projections use
        print(text, end="")
        return 0
    fitted = published.calibrated()
    measured = args.network.endswith(".json")
    try:
        net = costmodel.Network(
            1.0, costmodel.parse_seconds(args.latency),
            costmodel.parse_bandwidth(args.intra_bandwidth),
            costmodel.parse_seconds(args.intra_latency))
        if measured:  # `hpctrain bench allreduce`'s result
            net, _, delivered = network.network_from(network.load(args.network), net)
            if "within a node" not in delivered:
                delivered += f"; {args.intra_bandwidth} within a node (given)"
        else:
            share = 1.0 if args.transport == "measured" else fitted.share[args.transport]
            net = dataclasses.replace(net, bandwidth=costmodel.parse_bandwidth(args.network)
                                      * share)
            delivered = (f"{args.network} per node between nodes, "
                         + {"measured": "as given (measured)", "rdma": "at line rate over RDMA",
                            "tcp": f"{share:.2f} of it delivered over TCP (fitted)"}[
                                args.transport]
                         + f", {args.latency} per message; {args.intra_bandwidth} within a "
                         "node")
        gpus = [int(g) for g in args.gpus.split(",")]
        hvd = costmodel.Horovod(
            fusion_bytes=args.fusion_mb * 2**20, cycle_s=args.cycle_ms / 1e3,
            algorithm=args.algorithm, compression=args.compression,
            jitter=fitted.jitter if args.jitter is None else args.jitter,
            contention=fitted.contention if args.contention is None else args.contention)
    except ValueError as e:  # network.MeasurementError too
        raise InputError(str(e)) from None
    if args.study:
        cal = projection.from_study(Path(args.study))
    elif args.model and args.throughput and args.batch:
        cal = projection.from_throughput(args.model, args.throughput, args.batch,
                                         args.gradient_bytes)
    else:
        raise InputError("give --study DIR, or --model, --throughput and --batch "
                         "(or --published)")
    rows = projection.projection_table(cal, gpus, args.gpus_per_node, net, hvd)
    against: list[str] = []
    if args.study:  # the study's own points, measured and projected, side by side
        from hpctrain.scaling import plots

        points = projection.against_measured(Path(args.study), cal, net, hvd)
        against = ["## The study's own points, measured and projected", "",
                   "Each point at its own ranks per node and per-rank batch, with the network "
                   "above; efficiency against the study's base point as the study defines "
                   "it.", "", projection.render_against(points), ""]
        if args.out:
            png = plots.measured_and_projected(
                points, Path(args.out).with_suffix(".png"),
                f"{Path(args.study).name}: measured and projected")
            against += [f"![measured and projected]({png.name})", ""]
    text = "\n".join([
        f"# Projection: {cal.source}", "",
        f"Network {delivered}; {args.gpus_per_node} GPUs (ranks) "
        f"per node; NCCL algorithm {hvd.algorithm}, compression {hvd.compression}; Horovod "
        f"fusion {args.fusion_mb:g} MiB, cycle {args.cycle_ms:g} ms; step-time jitter "
        f"{100 * hvd.jitter:.2f} %, contention {hvd.contention:.2f} (fitted on published "
        "figures unless given: `hpctrain project --published`).", "",
        projection.render_table(rows), "", *against,
        "Reproduce with:", "", "```", command, "```", ""])
    if args.out:
        write_text(Path(args.out), text)
    print(text, end="")
    return 0


def _predict(args) -> int:
    import numpy as np

    from hpctrain.train import inference

    if not (args.h5 or args.images) or bool(args.h5) != (args.index is not None):
        raise InputError("give IMAGE files and/or --h5 FILE --index I [I ...]")
    if args.top < 1:
        raise InputError("--top must be >= 1")
    run = inference.describe_run(args.run)  # everything checked before TensorFlow loads
    names: list[str] = []
    images: list[np.ndarray] = []
    truth: list[int | None] = []
    for index in args.index or []:
        image, label = inference.staged_image(args.h5, index, args.split)
        if image.shape != run.staged_shape:
            raise InputError(f"{args.h5}: images of shape {image.shape}, the run trained on "
                             f"{run.staged_shape}")
        names.append(f"{args.h5}[{args.split} {index}]")
        images.append(image)
        truth.append(label)
    for path in args.images:  # every file read and checked before TensorFlow loads
        images.append(inference.prepare_image(path, run))
        names.append(path)
        truth.append(None)
    batch = np.stack(images)
    probs = inference.load_run(args.run).probabilities(batch)
    for name, p, true in zip(names, probs, truth, strict=True):
        top = np.argsort(-p)[:args.top]
        ranked = "  ".join(f"{k + 1}. {run.name(int(c))} {p[c]:.4f}" for k, c in enumerate(top))
        print(f"{name}: {ranked}" + (f"  (true: {run.name(true)})" if true is not None
                                     else ""))
    return 0


def _noise_scale(args) -> int:
    from hpctrain.report import noise_scale

    noise_scale.measure(args.run, args.batches, args.batch, args.groups, args.all,
                        log=lambda line: print(line, flush=True))
    print(f"written: {Path(args.run) / 'noise_scale.json'}")
    return 0


def add(sub) -> None:
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

    pj = sub.add_parser(
        "project", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="project a study (or a GPU's throughput) to larger clusters: a simulated "
        "training step",
        description="Predict step time, images/s and scaling efficiency at N GPUs by "
        "simulating one step:\ncompute per step (from the study's smallest point, or a GPU's "
        "throughput at its batch),\nlayer by layer; the wait for the slowest rank; Horovod's "
        "negotiation, tensor fusion and\neach buffer's allreduce by NCCL's algorithm over "
        "the links within and between nodes.\n--published fits the model's constants on "
        "published figures and checks it on held-out ones.",
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
                    "12.5GB/s (default 25Gb/s): the NIC's nominal rate, or a bandwidth you "
                    "measured, e.g. nccl-tests' all_reduce_perf bus bandwidth between two "
                    "nodes (--transport measured); or the allreduce.json of `hpctrain bench "
                    "allreduce` (bandwidth and latency between nodes, and within a node if it "
                    "measured several ranks on one)")
    pj.add_argument("--transport", choices=("rdma", "tcp", "measured"), default="rdma",
                    help="how NCCL crosses the network: RDMA (RoCE, InfiniBand) at line rate, "
                    "TCP at the share fitted on published figures; measured: --network as "
                    "given (default rdma)")
    pj.add_argument("--latency", default="10us", help="per-message latency across nodes")
    pj.add_argument("--intra-bandwidth", default="100GB/s", help="within a node (NVLink "
                    "~100-230GB/s, PCIe ~10GB/s)")
    pj.add_argument("--intra-latency", default="3us")
    pj.add_argument("--algorithm", choices=("auto", "ring", "tree", "hierarchical"),
                    default="auto", help="NCCL's allreduce across nodes (auto: the faster "
                    "of ring and tree, as NCCL >= 2.4; hierarchical: Horovod's "
                    "HOROVOD_HIERARCHICAL_ALLREDUCE)")
    pj.add_argument("--compression", choices=("none", "fp16"), default="none",
                    help="Horovod's gradient compression")
    pj.add_argument("--jitter", type=float, help="coefficient of variation of one rank's "
                    "step time, e.g. 0.02 (default: fitted)")
    pj.add_argument("--contention", type=float, help="compute lost per second of allreduce "
                    "alongside it, 0..1 (default: fitted)")
    pj.add_argument("--fusion-mb", type=float, default=JobEnvironment.HOROVOD_FUSION_BYTES
                    / 2**20, help="HOROVOD_FUSION_THRESHOLD in MiB (default: Horovod's, "
                    "%(default)g since 0.21)")
    pj.add_argument("--cycle-ms", type=float, default=JobEnvironment.HOROVOD_CYCLE_MS,
                    help="HOROVOD_CYCLE_TIME (default: Horovod's, %(default)g since 0.21)")
    pj.add_argument("--published", action="store_true",
                    help="fit the model on the calibration figures, check it on the held-out "
                    "ones (with --out: also the constants projections use)")
    pj.add_argument("--out", help="write the result (a directory with --published, else "
                    "a markdown file)")
    pj.set_defaults(func=_project)

    p = sub.add_parser(
        "predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="classify images with a run's final checkpoint",
        description="Classify PNG/JPEG images and/or images of a staged HDF5 file with the "
        "newest\ncheckpoint of a run, prepared as the run's data was staged: converted to "
        "its colour mode,\nresized with its policy, centre-cropped to the trained size.",
        epilog="examples:\n  hpctrain predict --run results/fmnist_cnn/RUN shoe.png "
        "bag.jpg\n  hpctrain predict --run results/fmnist_cnn/RUN --h5 "
        "data/fashion-mnist.h5 --index 0 1 2\n\n"
        "Staged images are printed first, then the files; put files before --index.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--h5", metavar="FILE", help="a staged HDF5 file (hpctrain stage)")
    p.add_argument("--index", type=int, nargs="+", metavar="I",
                   help="--h5: the images' indices in the split")
    p.add_argument("--split", default="test", choices=("test", "train"), help="--h5 split")
    p.add_argument("--top", type=int, default=3, metavar="K", help="classes to print (3)")
    p.set_defaults(func=_predict)

    n = sub.add_parser(
        "noise-scale", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="how large a global batch a run's gradients can use (gradient noise scale)",
        description="The simple gradient noise scale B_simple = tr(Sigma) / |G|^2 of a run "
        "at its newest\ncheckpoint (McCandlish et al. 2018): global batches well above it "
        "make few more\nuseful updates per epoch than it does, whatever the optimizer. "
        "Gradients of --batches\nbatches drawn as the run trained; written to "
        "RUN_DIR/noise_scale.json.",
        epilog="example:\n  hpctrain noise-scale --run results/fmnist_cnn/RUN --batches 64")
    n.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory")
    n.add_argument("--batches", type=int, default=64, help="batches to draw (64)")
    n.add_argument("--batch", type=int, default=0, help="samples per batch (default: the "
                   "run's per-rank batch_size)")
    n.add_argument("--groups", type=int, default=8, help="groups the batches are split into "
                   "for the interval (8)")
    n.add_argument("--all", action="store_true", help="at every checkpoint the run kept "
                   "(a config's `checkpoint_keep: 0` keeps one per epoch), not only the newest")
    n.set_defaults(func=_noise_scale)
